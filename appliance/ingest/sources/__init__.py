"""Where documents come from: drop folders, git repositories and GitHub webhooks."""

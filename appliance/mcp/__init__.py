"""The knowledge base as an MCP server (Model Context Protocol), for desktop and IDE assistants."""

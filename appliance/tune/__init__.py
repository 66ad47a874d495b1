"""Fine-tuning on a collection's own text: training pairs, mined negatives, embedder training, held-out scores."""

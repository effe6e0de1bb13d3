"""Model serving: training, a versioned artifact registry, micro-batched inference, hot swap."""

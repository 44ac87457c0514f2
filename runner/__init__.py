"""The pipeline's ends outside the workers: the producer side (split), the reassembly side (collect, run, render)."""

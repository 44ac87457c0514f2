"""The producer side (split) and the reassembly side (collect, run, render) of the pipeline."""

"""The inference worker: one replica of the `inference-group` consumer group."""

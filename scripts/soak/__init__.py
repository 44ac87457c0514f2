"""`make soak`: the pipeline against a 3-node Kafka cluster for minutes, under faults drawn at random.

A seeded schedule draws faults from the cluster catalogue (a partition leader, the transaction
coordinator or the active controller killed, a node frozen out of the ISR, a rolling restart)
plus a worker replica killed and S3 stopped, while tasks stream steadily; then every task must
have exactly one result. The report goes to docs/reliability.md, with the seed to replay it.
"""

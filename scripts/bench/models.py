"""The cost of models as data: routing to a registry model against the replica's own, and a model switch.

1. One replica, the same weights served two ways: as its own MODEL_PATH (tasks without `model`)
   and as a registry model (every task names it); the default runs before and after, and the
   ratio uses their mean.
2. A switch: frames naming a model the replica has never served, on an empty model cache, so the
   first frame pays for the download, the export for the backend and the load in a pool process;
   the longest end-to-end latency (that first frame's) and load time against the run's median.
"""

from __future__ import annotations

import asyncio
import tempfile
import uuid

from inference.config import KafkaSettings, S3Settings
from runner.models import push
from scripts import devstack
from scripts.bench.measure import MODEL, pipeline_run
from scripts.bench.readings import Measure
from scripts.bench.report import bracketing

SECOND_MODEL = devstack.REPO_ROOT / "weights" / "items.pt"
PIPELINE = ["-m", "inference"]


def model_runs(env: dict[str, str], data: list[bytes], processes: int) -> tuple[list[Measure], dict[str, float]]:
    tag = uuid.uuid4().hex[:8]
    kafka = KafkaSettings(bootstrap_servers=env["KAFKA_BOOTSTRAP_SERVERS"], models_topic=f"bench-models-{tag}")
    s3 = S3Settings(endpoint_url=env["S3_ENDPOINT_URL"], access_key_id=env["S3_ACCESS_KEY_ID"],
                    secret_access_key=env["S3_SECRET_ACCESS_KEY"])  # fmt: skip
    shapes, items = f"bench-shapes-{tag}", f"bench-items-{tag}"
    asyncio.run(_create_topic(kafka))
    asyncio.run(push(MODEL, shapes, None, None, kafka, s3))
    asyncio.run(push(SECOND_MODEL, items, None, None, kafka, s3))
    extra = {"WORKER_PROCESSES": str(processes), "KAFKA_MODELS_TOPIC": kafka.models_topic,
             "KAFKA_DELIVERY": "at_least_once"}  # fmt: skip
    default = pipeline_run(env, data, f"own model R=1 P={processes}", PIPELINE, 1, extra)
    routed = pipeline_run(env, data, f"registry model R=1 P={processes}", PIPELINE, 1, extra,
                          task_fields={"model": shapes})  # fmt: skip
    again = pipeline_run(env, data, f"own model R=1 P={processes}, again", PIPELINE, 1, extra)
    with tempfile.TemporaryDirectory(prefix="bench-model-cache-") as cache:
        switch = pipeline_run(env, data[:40], f"new model, cold cache R=1 P={processes}", PIPELINE, 1,
                              {**extra, "MODEL_CACHE_DIR": cache}, rate=10.0, task_fields={"model": items})  # fmt: skip
    ratios = {"registry model / own model": round(routed.fps / bracketing(default, again).fps, 3)}
    if switch.timeline:
        # The first frame waits longest: the others queue behind the same download and export.
        latencies = sorted(sample.latency_ms for sample in switch.timeline)
        loads = [sample.stages_ms.get("load", 0.0) for sample in switch.timeline]
        ratios["new model: first frame end to end, s"] = round(latencies[-1] / 1000, 2)
        ratios["new model: load in a pool process, s"] = round(max(loads) / 1000, 2)
        ratios["new model: median frame of the run, ms"] = round(latencies[len(latencies) // 2], 1)
    return [default, routed, again, switch], ratios


async def _create_topic(kafka: KafkaSettings) -> None:
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    admin = AIOKafkaAdminClient(bootstrap_servers=kafka.bootstrap_servers)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(kafka.models_topic, 1, 1, topic_configs={"cleanup.policy": "compact"})])
    finally:
        await admin.close()

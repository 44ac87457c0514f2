"""The benchmark's naive baseline: one frame at a time, the way a first version is written.

Fetch, then detect (in the event loop's own process, torch's default threads), then publish
and wait for the ack, then commit; nothing overlaps. Same settings and wire format as the
real worker, so `scripts/bench` can compare the two on the same topics and frames.
"""

from __future__ import annotations

import asyncio
import sys

import aioboto3
import cv2
import numpy as np
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.abc import ConsumerRebalanceListener

from inference.config import KafkaSettings, ModelSettings, S3Settings, build
from inference.messages import Detection, ModelInfo, ok_result, parse_task


class _Announce(ConsumerRebalanceListener):  # type: ignore[misc]
    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        return None

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        print("partitions_assigned", sorted(tp.partition for tp in assigned), flush=True)  # noqa: T201


async def serve() -> None:
    from ultralytics import YOLO

    kafka, s3, model_settings = build(KafkaSettings), build(S3Settings), build(ModelSettings)
    model = YOLO(str(model_settings.path))
    imgsz = {"imgsz": model_settings.imgsz} if model_settings.imgsz else {}  # else the checkpoint's
    info = ModelInfo(name=model_settings.path.name, conf=model_settings.conf, iou=model_settings.iou)
    consumer = AIOKafkaConsumer(**kafka.client_options(), group_id=kafka.group_id, enable_auto_commit=False,
                                auto_offset_reset="earliest")  # fmt: skip
    consumer.subscribe([kafka.tasks_topic], listener=_Announce())
    producer = AIOKafkaProducer(**kafka.client_options(), acks="all", enable_idempotence=True)
    await consumer.start()
    await producer.start()
    try:
        async with aioboto3.Session().client("s3", **s3.client_options()) as client:
            async for record in consumer:
                task = parse_task(record.value)
                response = await client.get_object(Bucket=task.bucket or s3.frames_bucket, Key=task.s3_key)
                data = await response["Body"].read()
                image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
                assert image is not None, f"undecodable frame {task.s3_key}"
                boxes = model.predict(image, conf=info.conf, iou=info.iou, verbose=False, **imgsz)[0].boxes
                detections = [
                    Detection(class_id=int(c), class_name=model.names[int(c)], confidence=float(s), bbox=tuple(b))
                    for c, s, b in zip(boxes.cls.tolist(), boxes.conf.tolist(), boxes.xyxy.tolist(), strict=True)
                ]
                result = ok_result(task, width=image.shape[1], height=image.shape[0], detections=detections,
                                   model=info, timing_ms={}, worker="naive")  # fmt: skip
                await producer.send_and_wait(kafka.results_topic, result.to_json(), key=task.video_id.encode())
                await consumer.commit()
    finally:
        await producer.stop()
        await consumer.stop()


if __name__ == "__main__":
    sys.exit(asyncio.run(serve()))

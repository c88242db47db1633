"""Topic names (after the prefix) and their creation."""

from __future__ import annotations

import logging

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from finpulse.settings import Settings

log = logging.getLogger("finpulse.topics")

NEWS_RAW = "news.raw"
SOCIAL_RAW = "social.raw"
EVENTS_SCORED = "events.scored"
EVENTS_DLQ = "events.dlq"
RETRAIN_SAMPLES = "retrain.samples"
INDEXES = "indexes"
INDEX_PARTIALS = "indexes.partials"
ALERTS = "alerts"
ALERTS_UNDELIVERED = "alerts.undelivered"

RAW_TOPICS = (NEWS_RAW, SOCIAL_RAW)
ALL_TOPICS = (
    NEWS_RAW,
    SOCIAL_RAW,
    EVENTS_SCORED,
    EVENTS_DLQ,
    RETRAIN_SAMPLES,
    INDEXES,
    INDEX_PARTIALS,
    ALERTS,
    ALERTS_UNDELIVERED,
)


async def ensure_topics(settings: Settings, bootstrap_servers: str) -> list[str]:
    """Create every finpulse topic that does not exist yet; returns the ones created."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        wanted = [settings.topic(name) for name in ALL_TOPICS]
        missing = [name for name in wanted if name not in existing]
        if missing:
            new_topics = [NewTopic(name, settings.topic_partitions, 1) for name in missing]
            try:
                await admin.create_topics(new_topics)
            except TopicAlreadyExistsError:
                pass
            log.info("created topics %s", ", ".join(missing))
        return missing
    finally:
        await admin.close()

"""im-api fixtures: the app in-process (its real lifespan) against the real Kafka and MongoDB."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from im_api.settings import ApiSettings
from im_api_helpers import Api, fast_settings, running


@pytest.fixture
def api_settings(endpoints, kafka_topics: str, mongo_db_name: str, jwt_secret: str, mongo) -> ApiSettings:
    return fast_settings(kafka_bootstrap=endpoints.kafka_bootstrap, kafka_idempotence=endpoints.kafka_idempotence,
                         topic_prefix=kafka_topics, mongo_uri=endpoints.mongo_uri, mongo_db=mongo_db_name,
                         jwt_secret=jwt_secret)


@pytest.fixture
async def api(api_settings: ApiSettings) -> AsyncIterator[Api]:
    async with running(api_settings) as instance:
        yield instance

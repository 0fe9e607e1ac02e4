# Apache Kafka 4.1.1 (KRaft) on Debian's JRE, from the jars the test layer fetches from Maven
# Central (build context: the jar cache). Reads the same KAFKA_* variables as apache/kafka.
ARG DEBIAN_IMAGE=helpdesk-im-test/debian:bookworm
FROM ${DEBIAN_IMAGE}
RUN apt-get update -qq \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends openjdk-17-jre-headless \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 1000 --create-home appuser \
 && mkdir -p /opt/kafka/libs /var/lib/kafka/data && chown -R appuser /var/lib/kafka
COPY libs/ /opt/kafka/libs/
COPY entrypoint.sh /opt/kafka/entrypoint.sh
COPY kafka-broker-api-versions.sh /opt/kafka/bin/kafka-broker-api-versions.sh
USER appuser
VOLUME /var/lib/kafka/data
ENTRYPOINT ["/opt/kafka/entrypoint.sh"]

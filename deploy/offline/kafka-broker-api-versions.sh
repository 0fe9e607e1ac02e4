#!/bin/sh
# Health probe with the same name as apache/kafka's: asks the broker for its API versions.
exec java -cp "/opt/kafka/libs/*" org.apache.kafka.tools.BrokerApiVersionsCommand "$@"

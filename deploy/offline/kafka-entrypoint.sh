#!/bin/sh
# Like apache/kafka's image: every KAFKA_FOO_BAR variable becomes foo.bar in server.properties.
set -eu
PROPS=/tmp/server.properties
: > "$PROPS"
env | grep '^KAFKA_' | grep -v '^KAFKA_HEAP_OPTS=' | while IFS='=' read -r name value; do
  key=$(echo "${name#KAFKA_}" | tr 'A-Z' 'a-z' | tr '_' '.')
  echo "$key=$value" >> "$PROPS"
done
grep -q '^log.dirs=' "$PROPS" || echo "log.dirs=/var/lib/kafka/data" >> "$PROPS"
CP="/opt/kafka/libs/*"
if [ ! -f /var/lib/kafka/data/meta.properties ]; then
  java -cp "$CP" kafka.tools.StorageTool format -t "${CLUSTER_ID:-5L6g3nShT-eMCtK--X86sw}" -c "$PROPS" --ignore-formatted
fi
exec java ${KAFKA_HEAP_OPTS:--Xmx512m} -cp "$CP" kafka.Kafka "$PROPS"

#!/bin/bash
# Health probe with the same name as apache/kafka's: asks the broker for its API versions.
# A port that does not accept yet fails at once: the JVM tool would retry for many seconds,
# and a restarted broker would then look down long after it is back.
server=localhost:9092
args=("$@")
for ((i = 0; i < ${#args[@]} - 1; i++)); do
  [ "${args[i]}" = "--bootstrap-server" ] && server=${args[i + 1]}
done
timeout 2 bash -c "exec 3<>/dev/tcp/${server%:*}/${server##*:}" 2>/dev/null || exit 1
# Client-JVM flags: the probe starts in about a second even on a busy machine.
exec java -XX:TieredStopAtLevel=1 -XX:+UseSerialGC -Xshare:auto \
  -cp "/opt/kafka/libs/*" org.apache.kafka.tools.BrokerApiVersionsCommand "$@"

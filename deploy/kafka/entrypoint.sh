#!/bin/sh
# Kafka (KRaft, one node) for the compose stack, in apache/kafka's image or the offline one: every
# KAFKA_FOO_BAR variable becomes foo.bar in server.properties (apache/kafka's convention: `___` is
# `-`, `__` is `_`), then SASL/SCRAM and ACLs from the IM_KAFKA_* variables below.
#
# Every client listener requires SCRAM-SHA-512; the controller listener is bound to the loopback,
# so only this container's own broker reaches it. The SCRAM users are created when the storage is
# formatted (first start of an empty volume): IM_KAFKA_ADMIN_USER / IM_KAFKA_ADMIN_PASSWORD, the
# super user the broker itself and `imctl topics create --acls` use, and IM_KAFKA_SCRAM_USERS,
# space-separated name=password pairs, one per service principal.
set -eu

fail() { echo "kafka-entrypoint: $*" >&2; exit 2; }
: "${IM_KAFKA_ADMIN_USER:?set IM_KAFKA_ADMIN_USER}"
: "${IM_KAFKA_ADMIN_PASSWORD:?set IM_KAFKA_ADMIN_PASSWORD}"
: "${IM_KAFKA_SCRAM_USERS:=}"
# A password lands in a JAAS line and in a `[name=...,password=...]` argument: keep it to the
# characters neither can misread.
safe() { case "$1" in *[!A-Za-z0-9_.-]*|"") return 1 ;; esac; }
safe "$IM_KAFKA_ADMIN_USER" || fail "IM_KAFKA_ADMIN_USER: use letters, digits, '.', '_' or '-'"
safe "$IM_KAFKA_ADMIN_PASSWORD" || fail "IM_KAFKA_ADMIN_PASSWORD: use letters, digits, '.', '_' or '-'"

PROPS=/tmp/server.properties
: > "$PROPS"
env | grep '^KAFKA_' | grep -v -e '^KAFKA_HEAP_OPTS=' -e '^KAFKA_OPTS=' -e '^KAFKA_HOME=' -e '^KAFKA_VERSION=' \
  | while IFS='=' read -r name value; do
      key=$(echo "${name#KAFKA_}" | tr 'A-Z' 'a-z' | sed -e 's/___/-/g' -e 's/__/@/g' -e 's/_/./g' -e 's/@/_/g')
      echo "$key=$value" >> "$PROPS"
    done
grep -q '^log.dirs=' "$PROPS" || echo "log.dirs=/var/lib/kafka/data" >> "$PROPS"

jaas="org.apache.kafka.common.security.scram.ScramLoginModule required username=\"$IM_KAFKA_ADMIN_USER\" password=\"$IM_KAFKA_ADMIN_PASSWORD\";"
listeners=$(sed -n 's/^listeners=//p' "$PROPS")
for listener in $(echo "$listeners" | tr ',' ' '); do
  name=$(echo "${listener%%://*}" | tr 'A-Z' 'a-z')
  [ "$name" = controller ] && continue
  echo "listener.name.$name.scram-sha-512.sasl.jaas.config=$jaas" >> "$PROPS"
done
cat >> "$PROPS" <<PROPS
sasl.enabled.mechanisms=SCRAM-SHA-512
sasl.mechanism.inter.broker.protocol=SCRAM-SHA-512
authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer
allow.everyone.if.no.acl.found=false
super.users=User:$IM_KAFKA_ADMIN_USER;User:ANONYMOUS
PROPS
# User:ANONYMOUS is what the broker is to its own controller over the loopback-only PLAINTEXT
# controller listener; no other listener is PLAINTEXT, so no client can be ANONYMOUS.

# What the health check (and an operator in the container) connects with.
cat > /tmp/client.properties <<PROPS
security.protocol=SASL_PLAINTEXT
sasl.mechanism=SCRAM-SHA-512
sasl.jaas.config=$jaas
PROPS
chmod 600 "$PROPS" /tmp/client.properties

CP="/opt/kafka/libs/*"
data=$(sed -n 's/^log.dirs=//p' "$PROPS" | cut -d, -f1)
if [ ! -f "$data/meta.properties" ]; then
  set -- --add-scram "SCRAM-SHA-512=[name=$IM_KAFKA_ADMIN_USER,password=$IM_KAFKA_ADMIN_PASSWORD]"
  for pair in $IM_KAFKA_SCRAM_USERS; do
    user=${pair%%=*}
    password=${pair#*=}
    safe "$user" && safe "$password" || fail "IM_KAFKA_SCRAM_USERS: '$user': name=password, letters, digits, '.', '_' or '-'"
    set -- "$@" --add-scram "SCRAM-SHA-512=[name=$user,password=$password]"
  done
  java -cp "$CP" kafka.tools.StorageTool format -t "${CLUSTER_ID:-5L6g3nShT-eMCtK--X86sw}" -c "$PROPS" \
    --ignore-formatted "$@" >/dev/null
fi
# apache/kafka ships its logging configuration (console and files); without it log4j2 prints
# errors only. The offline image has none and logs errors only, as before.
log_opts=""
if [ -f /opt/kafka/config/log4j2.yaml ]; then
  log_opts="-Dlog4j2.configurationFile=/opt/kafka/config/log4j2.yaml -Dkafka.logs.dir=/tmp/kafka-logs"
fi
# shellcheck disable=SC2086 # the options are words on purpose
exec java ${KAFKA_HEAP_OPTS:--Xmx512m} $log_opts -cp "$CP" kafka.Kafka "$PROPS"

# The lab stack's SIP/TURN peers from Debian 12 packages (kamailio 5.6, coturn 4.6,
# baresip 1.0): the versions the gateway's interop tests run against.
FROM debian:bookworm-slim
ARG PACKAGES
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends ${PACKAGES} \
 && rm -rf /var/lib/apt/lists/*

# webrtc-sip-gateway image.
#   docker build -t webrtc-sip-gateway .
#   docker run --network host -v $PWD/deploy/gateway/config.yaml:/etc/gateway/config.yaml:ro \
#     -e GATEWAY_TRUNK__PASSWORD=... webrtc-sip-gateway
# The configuration is not baked in: mount it at /etc/gateway/config.yaml (see
# config.example.yaml); secrets come from the environment (GATEWAY_<SECTION>__<KEY>).
# Check a configuration without starting: docker run ... webrtc-sip-gateway \
#   node dist/src/main.js --config /etc/gateway/config.yaml --check-config

FROM node:20-bookworm-slim AS build
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY tsconfig.json ./
COPY scripts ./scripts
COPY src ./src
COPY web ./web
# Type-checks and compiles the server (dist/src) and bundles the browser code (web/dist).
RUN npm run build \
 && npm prune --omit=dev --no-audit --no-fund

FROM node:20-bookworm-slim
ENV NODE_ENV=production
WORKDIR /app
COPY --from=build /app/package.json /app/package-lock.json ./
COPY --from=build /app/node_modules ./node_modules
COPY --from=build /app/dist/src ./dist/src
COPY --from=build /app/web/index.html /app/web/widget-demo.html ./web/
COPY --from=build /app/web/dist ./web/dist
# CDRs (cdr.path) go to a volume the unprivileged user can write.
RUN mkdir -p /etc/gateway /var/lib/gateway && chown node:node /var/lib/gateway
VOLUME ["/var/lib/gateway"]
USER node
# HTTP/WebSocket, SIP; RTP (media.portRange) and ICE (webrtc.portRange) are UDP ranges: with a
# bridge network publish them too, or use host networking as docker-compose.yml does.
EXPOSE 8080/tcp 5060/udp 5060/tcp
STOPSIGNAL SIGTERM
CMD ["node", "dist/src/main.js", "--config", "/etc/gateway/config.yaml"]

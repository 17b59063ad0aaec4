# The tokengate gateway (and, with `node dist/gateway/demo.js --upstream-only`, the demo upstream).
# The image holds no users file and no secret: both come from the deployment (see docker-compose.yml).
FROM node:24-bookworm-slim AS build
WORKDIR /app
COPY package.json package-lock.json tsconfig.json tsconfig.build.json ./
COPY scripts ./scripts
COPY plugin ./plugin
COPY gateway ./gateway
COPY client ./client
# npm ci builds dist/ (the prepare script); then only the runtime dependencies stay.
RUN npm ci && npm prune --omit=dev

FROM node:24-bookworm-slim
ENV NODE_ENV=production
WORKDIR /app
COPY --from=build /app/node_modules ./node_modules
COPY --from=build /app/dist ./dist
COPY package.json ./
COPY docker ./docker
USER node
EXPOSE 8080
ENTRYPOINT ["node", "dist/gateway/server.js"]
CMD ["--config", "docker/gateway.config.json"]

# The tokengate gateway (and, with `node dist/gateway/demo.js --upstream-only`, the demo upstream).
FROM node:20-bookworm-slim AS build
WORKDIR /app
COPY package.json package-lock.json tsconfig.json tsconfig.build.json ./
COPY scripts ./scripts
COPY plugin ./plugin
COPY gateway ./gateway
RUN npm ci && npm prune --omit=dev

FROM node:20-bookworm-slim
ENV NODE_ENV=production
WORKDIR /app
COPY --from=build /app/node_modules ./node_modules
COPY --from=build /app/dist ./dist
COPY package.json gateway.config.json ./
COPY examples ./examples
COPY docker ./docker
USER node
EXPOSE 8080
ENTRYPOINT ["node", "dist/gateway/server.js"]
CMD ["--config", "docker/gateway.config.json"]

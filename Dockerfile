# The monitor service and the device simulator, for docker-compose.yml.
FROM python:3.11-slim-bookworm
WORKDIR /app
# DejaVu: court reports show Cyrillic and Kazakh names.
RUN apt-get update && apt-get install -y --no-install-recommends fonts-dejavu-core \
    && rm -rf /var/lib/apt/lists/*
COPY pyproject.toml README.md ./
COPY monitor ./monitor
COPY geofences ./geofences
COPY device_sim ./device_sim
COPY protocol ./protocol
RUN pip install --no-cache-dir . && useradd --system --uid 10001 monitor
USER monitor
EXPOSE 8000
CMD ["monitor", "serve"]

FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY rag rag
COPY ingest ingest
COPY api api
COPY eval eval
RUN pip install --no-cache-dir .
EXPOSE 8000
CMD ["tgrag", "serve", "--host", "0.0.0.0", "--port", "8000"]

FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY rag rag
COPY ingest ingest
COPY api api
COPY eval eval
# openai: TGRAG_LLM=openai (gpt2giga, Ollama, vLLM) works in the image as documented.
RUN pip install --no-cache-dir ".[openai]"
# Not root: the data folder (uploads, a Telegram session file) is the only place it writes.
RUN useradd --system --uid 10001 --home-dir /data tgrag && mkdir /data && chown tgrag /data
USER tgrag
ENV TGRAG_DATA_DIR=/data
VOLUME ["/data"]
EXPOSE 8000
CMD ["tgrag", "serve", "--host", "0.0.0.0", "--port", "8000"]

# The dashboard (and the CLI) on a mounted products folder.
#   docker build -t rts .
#   docker run -p 8501:8501 -v "$PWD/products:/products" rts
# with a queue worker beside the dashboard (reprocessing from mounted strips):
#   docker run -p 8501:8501 -v "$PWD/products:/products" -v "$PWD/strips:/strips" \
#     -e RTS_STRIPS=/strips/stac/catalog.json -e RTS_CLIMATE=/strips/climate/era5_t2m_monthly.nc rts
FROM python:3.11-slim
RUN apt-get update && apt-get install -y --no-install-recommends make && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY pyproject.toml README.md Makefile ./
COPY pipeline pipeline
COPY data_products data_products
COPY dashboard dashboard
RUN make setup PY=python3
ENV PATH="/app/.venv/bin:${PATH}"
EXPOSE 8501
VOLUME ["/products"]
CMD ["rts", "dashboard", "--products", "/products", "--port", "8501", "--address", "0.0.0.0"]

# The dashboard (and the CLI) on a mounted products folder.
#   docker build -t rts .
#   docker run -p 8501:8501 -v "$PWD/products:/products" -e RTS_DASHBOARD_TOKEN=... rts
# with a queue worker beside the dashboard (reprocessing from mounted strips):
#   docker run -p 8501:8501 -v "$PWD/products:/products" -v "$PWD/strips:/strips" \
#     -e RTS_STRIPS=/strips/stac/catalog.json -e RTS_CLIMATE=/strips/climate/era5_t2m_monthly.nc rts
#
# Two stages: the first builds the wheel (the package with its models as package data), the
# second installs that wheel alone (no dev extras, no sources, no tests) and runs as a user
# without root rights.

FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md LICENSE ./
COPY pipeline pipeline
COPY data_products data_products
COPY dashboard dashboard
COPY scenes scenes
RUN python -m pip install --no-cache-dir --upgrade pip build \
 && python -m build --wheel --outdir /dist .

FROM python:3.11-slim
COPY --from=build /dist/*.whl /tmp/
# torch and torchvision from PyTorch's CPU index (the default wheels carry CUDA)
RUN python -m pip install --no-cache-dir --extra-index-url https://download.pytorch.org/whl/cpu /tmp/*.whl \
 && rm /tmp/*.whl \
 && useradd --create-home --uid 10001 rts \
 && mkdir /products && chown rts /products \
 && python -c "import dashboard.mapview as m; m.CACHE_DIR.mkdir(parents=True, exist_ok=True); print(m.CACHE_DIR)" \
    | xargs chown rts
# (the map layers are cached beside the app for Streamlit's static serving: that folder only is the user's)
USER rts
WORKDIR /home/rts
EXPOSE 8501
VOLUME ["/products"]
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
  CMD python -c "import urllib.request, sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8501/_stcore/health', timeout=4).status == 200 else 1)"
CMD ["rts", "dashboard", "--products", "/products", "--port", "8501", "--address", "0.0.0.0"]

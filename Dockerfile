# The dic-connector image the Helm chart (helm/dic-connector) runs: `dic` is the entrypoint,
# uid 10001, no secrets at build time (certificates, keyrings and URLs are mounted from
# Kubernetes Secrets at run time).
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md alembic.ini ./
COPY dic_connector ./dic_connector
COPY mpc ./mpc
RUN python -m venv /opt/dic/venv && /opt/dic/venv/bin/pip install --no-cache-dir .

FROM python:3.11-slim
RUN groupadd --gid 10001 dic && useradd --uid 10001 --gid dic --no-create-home --shell /usr/sbin/nologin dic
COPY --from=build /opt/dic/venv /opt/dic/venv
# the stores find their Alembic scripts beside the installed packages (MIGRATIONS_DIR)
COPY migrations /opt/dic/venv/lib/python3.11/site-packages/migrations
COPY mappings /opt/dic/mappings
ENV PATH=/opt/dic/venv/bin:$PATH PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
# glibc malloc keeps freed blocks up to 32 MiB in the heap instead of unmapping them: every
# large numpy temporary of the MPC engine was otherwise page-faulted in afresh (at 10^6 rows
# 20-25 % of a median's CPU; benchmarks/mpc_nonlinear.py --default-malloc shows the old way).
# The process then keeps its high-water mark resident between computations.
ENV MALLOC_MMAP_THRESHOLD_=33554432 MALLOC_TRIM_THRESHOLD_=1073741824
WORKDIR /opt/dic
USER 10001:10001
ENTRYPOINT ["dic"]
CMD ["--help"]

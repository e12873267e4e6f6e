"""One typed config: defaults, overrides, and clear errors for unknown keys / bad values."""

import pytest

from core import config as C

pytestmark = pytest.mark.unit


def write(tmp_path, text):
    p = tmp_path / "metaemb.toml"
    p.write_text(text)
    return p


def test_defaults_and_relative_paths(tmp_path):
    cfg = C.load(write(tmp_path, '[pipeline]\nwindow_days = 14\nstorage_root = "lake"\n'))
    assert cfg.pipeline.window_days == 14 and cfg.pipeline.cap_samples == 64
    assert cfg.table_location("meta_embeddings").uri == str((tmp_path / "lake" / "meta_embeddings").resolve())


def test_s3_locations_have_one_spelling_and_each_client_its_form(tmp_path, monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9000")
    monkeypatch.delenv("AWS_REGION", raising=False)
    monkeypatch.delenv("AWS_DEFAULT_REGION", raising=False)
    cfg = C.load(write(tmp_path, '[pipeline]\nstorage_root = "s3a://lake//prod/"\n[s3]\npath_style = true\n'))
    loc = cfg.table_location("meta_embeddings")
    assert loc.uri == "s3://lake/prod/meta_embeddings" and loc.spark_uri == "s3a://lake/prod/meta_embeddings"
    opts = loc.delta_options()
    assert opts["AWS_ENDPOINT_URL"] == "http://127.0.0.1:9000" and opts["AWS_ALLOW_HTTP"] == "true"
    assert opts["AWS_VIRTUAL_HOSTED_STYLE_REQUEST"] == "false" and opts["AWS_REGION"] == "us-east-1"
    assert not any("SECRET" in k or "ACCESS_KEY" in k for k in opts)  # credentials: environment only
    assert cfg.location("var/models").uri == str(tmp_path / "var" / "models")
    with pytest.raises(C.ConfigError, match="unknown key \\[s3\\] secret_access_key"):
        C.load(write(tmp_path, '[s3]\nsecret_access_key = "x"\n'))


def test_unknown_key_is_named(tmp_path):
    with pytest.raises(C.ConfigError, match=r"unknown key \[pipeline\] window_dayz"):
        C.load(write(tmp_path, "[pipeline]\nwindow_dayz = 14\n"))


def test_unknown_section(tmp_path):
    with pytest.raises(C.ConfigError, match=r"unknown section \[pipelines\]"):
        C.load(write(tmp_path, "[pipelines]\nwindow_days = 14\n"))


@pytest.mark.parametrize("text, message", [
    ("[pipeline]\ncap_samples = 0\n", r"cap_samples = 0; must be > 0"),
    ("[pipeline]\nsupport_fraction = 1.5\n", r"support_fraction must be in \(0, 1\)"),
    ('[feast]\nonline_store = "memcached"\n', r"online_store = 'memcached'; expected one of"),
    ('[pipeline]\nwindow_days = "30"\n', r"window_days must be int"),
    ("[data]\ntask_key = []\n", r"task_key must name at least one column"),
    ('[feast]\nwrite_from = "spark"\n', r'write_from = "spark" needs online_store = "redis"'),
    ("[feast]\nregistry_ttl_s = 30\nswitch_grace_s = 10\n", r"switch_grace_s = 10 must be longer than registry_ttl_s = 30"),
    ("[feast]\nwrite_batch_rows = 0\n", r"write_batch_rows = 0; must be > 0"),
])
def test_out_of_range_values(tmp_path, text, message):
    with pytest.raises(C.ConfigError, match=message):
        C.load(write(tmp_path, text))


def test_env_var_selects_the_file(tmp_path, monkeypatch):
    monkeypatch.setenv(C.CONFIG_ENV, str(write(tmp_path, "[model]\nembedding_dim = 16\n")))
    assert C.load().model.embedding_dim == 16


def test_tables_stay_under_storage_root(tmp_path):
    cfg = C.load(write(tmp_path, '[pipeline]\nstorage_root = "lake"\n'))
    with pytest.raises(C.ConfigError, match="outside storage_root"):
        cfg.table_location("../../etc")


def test_installation_paths_resolve_from_the_project_not_the_config_folder(tmp_path):
    """A config kept outside the project (/etc/metaemb/prod.toml) still finds the jars, the
    GPU discovery script, the Feast repo and the venv's interpreter; its data paths stay its own."""
    import sys

    from serving.feast_repo import repo_dir
    from pipelines.spark import delta_jars, spark_conf

    etc = tmp_path / "etc" / "metaemb"
    etc.mkdir(parents=True)
    cfg = C.load(write(etc, '[data]\ninteractions = "in/i.parquet"\n[spark]\nexecutor_gpus = 1\n'))
    assert cfg.path(cfg.data.interactions) == etc / "in" / "i.parquet"
    jars = delta_jars(cfg)  # raised "Delta Lake jars not found in <config folder>/.jars" before
    assert jars and all(j.parent == C.PROJECT_ROOT / ".jars" for j in jars)
    conf = spark_conf(cfg)
    assert conf["spark.executor.resource.gpu.discoveryScript"] == str(C.PROJECT_ROOT / "scripts" / "gpu_discovery.sh")
    assert conf["spark.pyspark.python"] == sys.executable
    assert repo_dir(cfg) == (C.PROJECT_ROOT / "feature_repo").resolve()


def test_absolute_installation_paths_are_kept(tmp_path):
    cfg = C.load(write(tmp_path, '[spark]\njars_dir = "/opt/metaemb/.jars"\n[feast]\nrepo_path = "/opt/metaemb/fr"\n'))
    assert cfg.spark.jars_dir == "/opt/metaemb/.jars" and cfg.feast.repo_path == "/opt/metaemb/fr"
    assert C.from_dict(cfg.to_dict()).spark.jars_dir == "/opt/metaemb/.jars"  # round trip (child processes)


def test_meta_sgd_keys(tmp_path):
    cfg = C.load(write(tmp_path, "[train]\nmeta_sgd = true\nmeta_sgd_lr = 0.02\ninner_steps = 3\n"))
    assert cfg.train.meta_sgd is True and cfg.train.meta_sgd_lr == 0.02 and cfg.train.inner_steps == 3
    defaults = C.load(write(tmp_path, "[data]\n")).train
    assert (defaults.meta_sgd, defaults.inner_steps, defaults.task_lr) == (True, 3, 0.3)  # what evaluation kept
    assert C.load(write(tmp_path, '[train]\nmode = "maml"\n')).train.meta_sgd  # maml trains without it
    with pytest.raises(C.ConfigError, match=r"\[train\] meta_sgd_lr = 0.0; must be > 0"):
        C.load(write(tmp_path, "[train]\nmeta_sgd_lr = 0.0\n"))
    with pytest.raises(C.ConfigError, match=r"\[train\] meta_sgd must be true or false"):
        C.load(write(tmp_path, '[train]\nmeta_sgd = "learned"\n'))


def test_the_project_config_loads():
    # metaemb.toml at the project root: the evaluation's [train] (3 inner steps at 0.3, Meta-SGD)
    cfg = C.load(C.PROJECT_ROOT / "metaemb.toml")
    assert cfg.train.mode == "limaml" and cfg.train.meta_sgd and cfg.train.inner_steps == 3


def test_finetune_steps_and_lr_come_from_the_checkpoint_unless_set(tmp_path):
    assert (C.load(write(tmp_path, "[data]\n")).finetune.steps, C.load(write(tmp_path, "[data]\n")).finetune.lr) == (None, None)
    cfg = C.load(write(tmp_path, "[finetune]\nsteps = 1\nlr = 2\n"))
    assert (cfg.finetune.steps, cfg.finetune.lr) == (1, 2.0)
    with pytest.raises(C.ConfigError, match=r"\[finetune\] steps must be int"):
        C.load(write(tmp_path, '[finetune]\nsteps = "3"\n'))
    with pytest.raises(C.ConfigError, match=r"\[finetune\] lr = 0.0; must be > 0"):
        C.load(write(tmp_path, "[finetune]\nlr = 0.0\n"))
    C.write(cfg, tmp_path / "round.toml")  # None values are left out of a written config
    assert C.load(tmp_path / "round.toml").finetune.steps == 1

import tomllib

import pytest
from repo import ROOT

from atlas.config import AtlasConfig, load_config
from atlas.errors import AtlasError

CONFIGS = ROOT / "jobs" / "configs"


def test_default_toml_documents_the_embedded_default():
    assert load_config(CONFIGS / "default.toml") == AtlasConfig()


def test_production_config_is_valid_and_names_the_real_models():
    cfg = load_config(CONFIGS / "production.toml")
    assert cfg.models.clip == "open_clip:ViT-bigG-14/laion2b_s39b_b160k"
    assert cfg.models.decoder == "kandinsky-community/kandinsky-2-2-decoder"
    assert cfg.sae.expansion_factor == 64


@pytest.mark.parametrize(
    "text, message",
    [
        ("[sae]\nexpansion = 4\n", "unknown key 'sae.expansion'"),
        ("[nonsense]\nx = 1\n", "unknown key 'nonsense'"),
        ("[render]\nsteps = 0\n", "render.steps: Input should be greater than or equal to 1 (got 0)"),
        ("[compute]\ndevice = 'tpu'\n", "compute.device"),
        ("[directions]\ntemplate = 'a {word}'\n", "directions.template"),
        ("[sae\n", "not valid TOML"),
        ("[sql]\nmemory_limit = 'lots'\n", "sql.memory_limit: Value error, not a size like 4GB or 512MiB (got 'lots')"),
        ("[sql]\nviewer_memory_limit = '1KB'\n", "sql.viewer_memory_limit: Value error, must be at least 16 MB"),
        ("[sql]\nmax_temp_size = '-1GB'\n", "sql.max_temp_size"),
        ("[sql]\nviewer_max_concurrent = 0\n", "sql.viewer_max_concurrent"),
    ],
)
def test_bad_config_is_one_line_naming_the_key(tmp_path, text, message):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(AtlasError) as e:
        load_config(path)
    assert message in str(e.value)
    assert str(path) in str(e.value)
    assert "\n" not in str(e.value)


def test_missing_config_file(tmp_path):
    with pytest.raises(AtlasError, match="config file not found"):
        load_config(tmp_path / "nope.toml")


def test_relative_paths_resolve_against_the_config_folder(tmp_path):
    (tmp_path / "imgs").mkdir()
    (tmp_path / "c.toml").write_text('[data]\nsource = "imgs"\n')
    assert load_config(tmp_path / "c.toml").data.source == str(tmp_path / "imgs")
    assert tomllib.loads((CONFIGS / "default.toml").read_text())["data"]["source"] == "builtin:shapes"


def test_the_sql_section_changes_no_stage_fingerprint():
    from jobs.build import STAGES, _jsonable

    other = AtlasConfig.model_validate({"sql": {"memory_limit": "256MB", "threads": 1, "viewer_max_concurrent": 9}})
    assert other.sql != AtlasConfig().sql
    for stage in STAGES.values():
        assert _jsonable(stage.config(other)) == _jsonable(stage.config(AtlasConfig())), stage.name

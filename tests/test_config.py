"""One typed configuration, loadable from TOML; misspelt thresholds are errors."""

import pytest

from pipeline.config import Config, ConfigError, load_config


def test_defaults_carry_the_reference_values():
    cfg = Config()
    assert cfg.coreg.prior_sigma_m == 4.0  # Dai et al. 2025
    assert cfg.coreg.max_pair_shift_m == 15.0
    assert cfg.change.confidence_min_obs == 4


def test_toml_overrides_and_changes_the_digest(tmp_path):
    f = tmp_path / "c.toml"
    f.write_text("[coreg]\nmax_iterations = 3\n[change]\nmin_dems = 4\n")
    cfg = load_config(f)
    assert cfg.coreg.max_iterations == 3 and cfg.change.min_dems == 4
    assert cfg.digest() != Config().digest()
    assert load_config(None).digest() == Config().digest()


@pytest.mark.parametrize("text, match", [
    ("[coreg]\nmax_iteration = 3\n", "unknown key 'max_iteration'"),
    ("[corg]\n", "unknown key 'corg'"),
    ("[coreg]\nmax_iterations = 'many'\n", "expected a number"),
    ("[coreg\n", "not valid TOML"),
    ('[coreg]\nsecond_pass = "false"\n', "expected true or false"),  # a string is not a bool
    ("[quantify]\nmin_intervals = 6.5\n", "expected an integer"),
    ("[quantify]\noutline_sigma_m = nan\n", "finite"),
    ("[quantify]\nelevation_sigma_scale = -0.1\n", "must not be negative"),
    ("[grid]\nresolution_m = -2.0\n", "must not be negative"),
    ("[grid]\nresolution_m = 0.0\n", "resolution_m must be positive"),
    ("[quantify]\nsummer_months = 7\n", "expected a list"),
    ("[quantify]\nsummer_months = [7.5, 8]\n", "expected an integer"),
])
def test_bad_config_files_fail_with_the_file_and_the_problem(tmp_path, text, match):
    f = tmp_path / "bad.toml"
    f.write_text(text)
    with pytest.raises(ConfigError, match=match) as err:
        load_config(f)
    assert str(f) in str(err.value)


def test_a_binary_configuration_file_is_a_clear_error(tmp_path):
    f = tmp_path / "x.toml"
    f.write_bytes(bytes(range(256)))
    with pytest.raises(ConfigError, match="not a text"):
        load_config(f)


def test_missing_config_file_is_named(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.toml")


def test_the_default_dem_digest_is_the_one_existing_products_were_made_with():
    """The DEM stage's digest decides whether every cell of a products folder is recomputed
    (the costly stage). Changing it must be a decision, not a side effect of tidying the
    configuration: retired fields stay in it at their old values. Update this value only with
    a change to what the DEM stage computes."""
    from pipeline.config import Config

    assert Config().dem_digest() == "b8d8ac33abafbe1b"  # revision 8: ground drops only while it thaws

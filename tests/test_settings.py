import pytest

from dupstream.app.settings import Settings
from dupstream.core.errors import ConfigError
from dupstream.stream.blobs import MinioStore
from dupstream.stream.kafka import consumer_config, producer_config


def test_env_overrides_yaml(tmp_path, monkeypatch):
    cfg = tmp_path / "s.yaml"
    cfg.write_text("kafka:\n  input_topic: from-yaml\n  group_id: g-yaml\nbatch:\n"
                   "  max_events: 7\n")
    monkeypatch.setenv("DUPSTREAM_KAFKA__GROUP_ID", "g-env")
    monkeypatch.setenv("DUPSTREAM_S3__SECRET_KEY", "s3cr3t-value")
    s = Settings.load(cfg)
    assert s.kafka.input_topic == "from-yaml"
    assert s.kafka.group_id == "g-env"
    assert s.batch.max_events == 7
    assert s.s3.secret_key.get_secret_value() == "s3cr3t-value"


def test_secrets_never_appear_in_reprs(monkeypatch):
    monkeypatch.setenv("DUPSTREAM_S3__SECRET_KEY", "s3cr3t-value")
    monkeypatch.setenv("DUPSTREAM_KAFKA__SASL_PASSWORD", "kafka-pass-value")
    s = Settings.load()
    for text in (repr(s), str(s), s.model_dump_json()):
        assert "s3cr3t-value" not in text and "kafka-pass-value" not in text
    store = MinioStore(endpoint="127.0.0.1:1", access_key="AK", secret_key="s3cr3t-value")
    assert "s3cr3t-value" not in repr(store)


def test_sasl_and_tls_reach_librdkafka():
    extra = {"security.protocol": "SASL_SSL", "sasl.mechanisms": "SCRAM-SHA-512",
             "ssl.ca.location": "/etc/ca.pem"}
    c = consumer_config(bootstrap_servers="b:9093", group_id="g", extra=extra,
                        sasl_username="u", sasl_password="p")
    p = producer_config(bootstrap_servers="b:9093", extra=extra, sasl_username="u",
                        sasl_password="p")
    for conf in (c, p):
        assert conf["security.protocol"] == "SASL_SSL" and conf["sasl.password"] == "p"
    assert c["enable.auto.commit"] is False and c["enable.auto.offset.store"] is False
    assert p["enable.idempotence"] is True and p["acks"] == "all"


def test_bad_settings_file_is_a_config_error(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("- just\n- a list\n")
    with pytest.raises(ConfigError):
        Settings.load(bad)
    with pytest.raises(ConfigError):
        Settings.load(tmp_path / "missing.yaml")


def test_policy_settings_reach_the_decision(monkeypatch):
    from dupstream.engine.build import build_deduper

    monkeypatch.setenv("DUPSTREAM_POLICY__TENANT_DOMAINS", '{"cams": "cctv"}')
    monkeypatch.setenv("DUPSTREAM_POLICY__TENANT_PREFERENCES", '{"desk": "recall"}')
    monkeypatch.setenv("DUPSTREAM_POLICY__PREFERENCE", "precision")
    s = Settings.load()
    policy = build_deduper(detector="none", policy=s.policy).policy
    assert policy.resolve_domain("cams") == "cctv" and policy.resolve_domain("other") is None
    assert policy.preference == "precision" and policy.tenant_preferences == {"desk": "recall"}
    # the cut-off really depends on them: the recall-preferring tenant gets a strictly lower one
    # than the others (precision), and a policy that ignored tenant preferences would not
    from dupstream.workers.similarity import PairScore

    score = PairScore(exact=False, visual=0.6, pdq_distance=120, pdq_variant=0, fused=0.6,
                      changed_area=None)
    assert policy.cut_off(score, tenant="desk") < policy.cut_off(score, tenant="other")
    plain = build_deduper(detector="none").policy
    assert plain.cut_off(score, tenant="desk") == plain.cut_off(score, tenant="other")


def test_low_information_settings_reach_the_policy(monkeypatch):
    from dupstream.app.root import policy_options
    from dupstream.engine.build import build_deduper

    monkeypatch.setenv("DUPSTREAM_POLICY__LOW_INFORMATION_P_SCALE", "1.0")
    monkeypatch.setenv("DUPSTREAM_POLICY__LOW_INFORMATION_FLAT_MIN", "0.99")
    s = Settings.load()
    policy = build_deduper(detector="none", policy=policy_options(s.policy)).policy
    assert policy.low_information_p_scale == 1.0 and policy.low_information_flat_min == 0.99
    assert policy.low_information_pdq_quality == 0  # the default
    assert policy.verify_stop_p_copy == 0.9
    monkeypatch.setenv("DUPSTREAM_POLICY__VERIFY_STOP_P_COPY", "1.5")
    s = Settings.load()
    assert build_deduper(detector="none",
                         policy=policy_options(s.policy)).policy.verify_stop_p_copy == 1.5
    monkeypatch.setenv("DUPSTREAM_POLICY__LOW_INFORMATION_P_SCALE", "2.0")
    with pytest.raises(ConfigError):
        Settings.load()

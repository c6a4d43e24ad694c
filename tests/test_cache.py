import multiprocessing
import string

from hypothesis import given
from hypothesis import strategies as st

from mmie_pipe.cache import GenerationCache, cache_key
from mmie_pipe.model_io import Constraint, ImagePart, Message, ModelRequest, Sampling, TextPart

BASE = dict(
    backend_kind="openai",
    model_identity={"name": "m", "revision": "r1"},
    request=ModelRequest(prompt="Tweet: x\nEntities:", sampling=Sampling(max_tokens=32)),
    stage="extract",
    stage_version=1,
)

words = st.text(alphabet=string.ascii_letters + " ", min_size=1, max_size=20)


@given(
    component=st.sampled_from(["backend_kind", "model_identity", "request", "stage", "stage_version"]),
    value=words,
)
def test_any_component_change_changes_key(component, value):
    base = cache_key(**BASE)
    changed = dict(BASE)
    if component == "model_identity":
        changed[component] = {**BASE["model_identity"], "revision": "r1" + value}
    elif component == "request":
        changed[component] = BASE["request"].model_copy(update={"prompt": BASE["request"].prompt + value})
    else:
        changed[component] = f"{BASE[component]}{value}"
    assert cache_key(**changed) != base


@given(
    temperature=st.floats(min_value=0, max_value=2),
    max_tokens=st.integers(min_value=1, max_value=4096),
    sample_index=st.integers(min_value=0, max_value=50),
)
def test_sampling_and_sample_index_enter_the_key(temperature, max_tokens, sample_index):
    req = ModelRequest(prompt="p", sampling=Sampling(temperature=temperature, max_tokens=max_tokens), sample_index=sample_index)
    key = cache_key(**{**BASE, "request": req})
    for other in (
        req.model_copy(update={"sampling": Sampling(temperature=temperature + 0.5, max_tokens=max_tokens)}),
        req.model_copy(update={"sampling": Sampling(temperature=temperature, max_tokens=max_tokens + 1)}),
        req.model_copy(update={"sample_index": sample_index + 1}),
        req.model_copy(update={"constraint": Constraint(choices=("a", "b"))}),
        req.model_copy(update={"top_logprobs": 5}),
        req.model_copy(update={"lora": "adapter"}),
    ):
        assert cache_key(**{**BASE, "request": other}) != key


@given(st.dictionaries(st.text(min_size=1, max_size=5), st.integers(), min_size=2, max_size=6))
def test_dict_order_does_not_matter(identity):
    reordered = dict(reversed(list(identity.items())))
    assert cache_key(**{**BASE, "model_identity": identity}) == cache_key(**{**BASE, "model_identity": reordered})


def test_images_enter_by_content_not_path(tmp_path):
    a, b, c = tmp_path / "a.jpg", tmp_path / "b.jpg", tmp_path / "c.jpg"
    a.write_bytes(b"same bytes")
    b.write_bytes(b"same bytes")
    c.write_bytes(b"other bytes")

    def key(path):
        msg = Message(role="user", content=(ImagePart.from_path(path), TextPart(text="caption this")))
        return cache_key(**{**BASE, "request": ModelRequest(messages=(msg,))})

    assert key(a) == key(b)
    assert key(a) != key(c)


def test_no_secret_or_url_in_key_material():
    from mmie_pipe.adapters.openai_backend import OpenAIBackend, OpenAIConfig

    backend = OpenAIBackend(OpenAIConfig(model="m", base_url="http://10.1.2.3:9/v1", api_key_env="SECRET_ENV"))
    ident = str(backend.identity())
    assert "10.1.2.3" not in ident and "SECRET" not in ident


def _writer(path, start):
    cache = GenerationCache(path)
    for i in range(start, start + 200):
        cache.put(f"k{i}", "s", {"text": str(i)})


def test_cache_shared_by_processes(tmp_path):
    path = tmp_path / "c.sqlite"
    GenerationCache(path)
    procs = [multiprocessing.get_context("spawn").Process(target=_writer, args=(path, n * 200)) for n in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    cache = GenerationCache(path)
    assert cache.info()["entries"] == 600
    assert cache.get("k599") == {"text": "599"}


def test_info_and_clear_by_stage(tmp_path):
    cache = GenerationCache(tmp_path / "c.sqlite")
    cache.put("a", "extract", {"text": "1"})
    cache.put("b", "caption", {"text": "2"})
    assert cache.info()["stages"]["extract"]["entries"] == 1
    assert cache.clear("extract") == 1
    assert cache.get("a") is None and cache.get("b") == {"text": "2"}
    assert cache.clear() == 1

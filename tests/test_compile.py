"""model.compile=true (torch.compile of a step's two halves around the core) on CPU: the
default model's first steps on the tiny data, teacher-forced and open-loop, lose what the eager
model loses; a setting that is not true or false is refused naming the key."""

import pytest
import torch

from tests.helpers import compose_config
from tests.test_precision import STEPS, train_losses
from world_models.errors import UserError
from world_models.settings import check_types


def compile_fails() -> str | None:
    """Why torch.compile cannot work on this machine (inductor on CPU needs a C++ compiler),
    or None when it can."""
    try:
        torch.compile(lambda x: x * 2 + 1)(torch.ones(3))
    except Exception as err:  # whatever stops it, the test cannot say anything about the model
        return f"{type(err).__name__}: {str(err).strip().splitlines()[0][:200]}"
    return None


@pytest.mark.slow  # compiling takes ~20-60 s of CPU here
@pytest.mark.filterwarnings("ignore::UserWarning")
def test_compiled_default_model_trains_as_the_eager_one(tiny_data):
    reason = compile_fails()
    if reason:
        pytest.skip(f"torch.compile cannot work here ({reason}): model.compile is untested")
    from torch._dynamo.utils import counters

    small = ("data=tiny", f"data.dir={tiny_data}", "data.collect=false", "model.hidden_size=32")
    cfg, compiled_cfg = compose_config("train", *small), compose_config("train", *small,
                                                                         "model.compile=true")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        eager = train_losses(cfg, "32-true")
        graphs = counters["stats"]["unique_graphs"]
        compiled = train_losses(compiled_cfg, "32-true")
    finally:
        torch.set_num_threads(threads)
    # both halves, with and without gradients through the fed-back frame, and at T=1 and T>1
    assert counters["stats"]["unique_graphs"] - graphs >= 4
    assert len(eager) == len(compiled) == STEPS  # 2 teacher-forced, then 2 open-loop steps
    torch.testing.assert_close(torch.tensor(compiled), torch.tensor(eager), rtol=1e-4, atol=0)


def test_compile_must_be_true_or_false():
    with pytest.raises(UserError, match=r"^model\.compile: expected true or false, got 'yes'$"):
        check_types(compose_config("train", "model.compile=yes"))

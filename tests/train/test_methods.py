import pytest

from bvkit.errors import BvkitError
from bvkit.methods import Recipe, Stage, create_method, list_methods, register_method

ISSUE_METHODS = ["balanced-softmax", "cb-focal", "ce", "crt", "focal", "ldam", "ldam-drw", "lws", "ride",
                 "ride-distill", "ride-ea", "tau-norm"]


def test_every_method_of_the_issue_is_registered():
    assert set(ISSUE_METHODS) <= set(list_methods())
    assert list_methods("ride*") == ["ride", "ride-distill", "ride-ea"]


def test_defaults_are_the_published_cifar_recipes():
    ce, ride, ldam = create_method("ce"), create_method("ride"), create_method("ldam-drw")
    for recipe in (ce, ride, ldam):
        assert (recipe.epochs, recipe.batch_size, recipe.lr, recipe.momentum) == (200, 128, 0.1, 0.9)
        assert (recipe.warmup_epochs, recipe.lr_milestones, recipe.drw_epoch) == (5, (160, 180), 160)
        assert recipe.precision == "auto"
    assert ride.weight_decay == 5e-4 and ldam.weight_decay == 2e-4 and ce.weight_decay == 2e-4
    assert ride.model_kwargs["num_experts"] == 3 and ride.augment["rotation"] == 15.0
    routing = create_method("ride-ea").stages[0]
    assert (routing.kind, routing.epochs, routing.batch_size, routing.lr, routing.schedule, routing.balanced) == (
        "routing", 5, 512, 0.01, "cosine", True)
    crt = create_method("crt").stages[0]
    assert (crt.kind, crt.epochs, crt.balanced) == ("crt", 10, True)


# Each method's SGD as the authors' code has it (docs/recipes.md): RIDE's configs and BBN's
# get_optimizer use Nesterov momentum; the LDAM-DRW script (CE, focal, LDAM and re-weighting
# alike), the decoupling code (cRT, LWS and their CE stage one), BalancedMetaSoftmax, OLTR, LFME
# and M2m plain momentum.
NESTEROV = {"ride": True, "ride-ea": True, "ride-distill": True, "bbn": True,
            "ce": False, "focal": False, "cb-focal": False, "ldam": False, "ldam-drw": False,
            "balanced-softmax": False, "crt": False, "tau-norm": False, "lws": False,
            "oltr": False, "lfme": False, "m2m": False}


@pytest.mark.parametrize("name", sorted(NESTEROV))
def test_each_method_has_its_published_momentum(name):
    recipe = create_method(name)
    assert (recipe.momentum, recipe.nesterov) == (0.9, NESTEROV[name])
    for stage in recipe.stages:  # RIDE's routers (ride_ea config) Nesterov; cRT / LWS plain
        assert stage.nesterov is (stage.kind == "routing")


def test_imagenet_size_settings_keep_rides_nesterov_for_every_method():
    # the documented choice: every method trains with RIDE's ImageNet-LT setting there
    assert create_method("ce", dataset="imagenet-lt").nesterov is True


def test_overrides_reach_fields_kwargs_and_stages():
    recipe = create_method("ride-ea", epochs=4, **{"model_kwargs.num_experts": 2, "loss_kwargs": {"base": "ce"},
                                                  "routing.epochs": 1, "routing.options.top_k": 5})
    assert recipe.epochs == 4 and recipe.model_kwargs == {"num_experts": 2, "reduce_dimension": True}
    assert recipe.loss_kwargs == {"base": "ce"} and recipe.stages[0].epochs == 1
    assert recipe.stages[0].options["top_k"] == 5
    assert create_method("ride") .model_kwargs["num_experts"] == 3  # the registered default is untouched
    assert create_method("ce", lr_milestones=[8, 9]).lr_milestones == (8, 9)
    assert create_method("ce", model_kwargs__width=8).model_kwargs["width"] == 8


@pytest.mark.parametrize(
    "name, overrides, message",
    [
        ("nope", {}, "unknown method"),
        ("ce", {"model_kwargs.num_experts": 3}, "has no experts"),
        ("ride-ea", {"model_kwargs.num_experts": 1}, ">= 2"),
        ("ce", {"epochs": 0}, "positive integer"),
        ("ce", {"epochs": "ten"}, "integer"),
        ("ce", {"nesterov": "yes"}, "true or false"),
        ("ce", {"learning_rate": 0.1}, "unknown setting"),
        ("crt", {"crt.speed": 1}, "unknown setting"),
        ("ce", {"schedule": "linear"}, "schedule"),
        ("ce", {"precision": "fp16"}, "precision must be one of auto, bf16, fp32"),
    ],
)
def test_bad_settings_are_bvkit_errors(name, overrides, message):
    with pytest.raises(BvkitError, match=message):
        create_method(name, **overrides)


def test_user_methods_register_and_round_trip_through_dicts():
    recipe = Recipe("my-crt-test", model="resnet32", stages=(Stage("crt", epochs=2),))
    register_method(recipe)
    assert create_method("my-crt-test").stages[0].epochs == 2
    with pytest.raises(BvkitError, match="already registered"):
        register_method(recipe)
    assert Recipe.from_dict(create_method("ride-ea").to_dict()) == create_method("ride-ea")


def test_create_method_takes_a_resolved_recipe_as_it_is():
    from dataclasses import replace

    from bvkit.methods import create_method

    resolved = create_method("ride", dataset="imagenet-lt", epochs=3)
    assert create_method(resolved) == resolved  # no second dataset adaptation, no defaults re-applied
    assert create_method(resolved, lr=0.2) == replace(resolved, lr=0.2)
    assert create_method(resolved, dataset="cifar10-lt") == resolved

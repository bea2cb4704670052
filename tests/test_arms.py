"""One arm vocabulary: code names, display names and the quarantine flag come from ``arms``."""
from vgrout_ray.arms import ARM_NAMES, ARMS, QUARANTINE_ARMS, display_name, plot_facet
from vgrout_ray.config import PRESETS


def test_codes_and_display_names_are_one_to_one():
    assert len({a.code for a in ARMS}) == len({a.display for a in ARMS}) == len(ARMS) == 4
    assert ARM_NAMES == {"none": "vanilla", "erase": "projected", "route": "routing", "route2": "routing2"}


def test_quarantine_arms_are_exactly_the_routing_ones():
    assert QUARANTINE_ARMS == ("routing", "routing2")


def test_unknown_codes_and_facets():
    assert display_name(None) == "vanilla" and display_name("route2") == "routing2"
    assert plot_facet("projected", 0) == "static erasure" and plot_facet("projected", 3) == "online erasure"
    assert plot_facet("routing", 0) == "routing" and plot_facet("weird", 0) == "vanilla"


def test_the_config_takes_every_code_and_names_the_arm():
    for a in ARMS:
        cfg = PRESETS["smoke"](intervention=a.code)
        assert cfg.arm == a.display

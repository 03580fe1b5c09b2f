"""Offline replay of test-time-compute strategies on tables with several samples per prompt.

``ttc-router simulate`` reads a multi-sample table (:mod:`classifier.simulate.samples`, or
the MoT-cascade set through :mod:`classifier.importers.mot_cascade`), replays greedy,
``vote@k`` with each early-stop rule, and escalation cascades
(:mod:`classifier.simulate.replay`) with the service's own vote and escalation rules
(:mod:`classifier.simulate.rules`), and writes one outcome record per prompt x arm so the
vote arms can be trained and evaluated like any other arm.
"""

from classifier.simulate.replay import (
    ArmPlan,
    ArmSummary,
    SimulatedOutcome,
    Simulation,
    SimulationConfig,
    simulate,
)
from classifier.simulate.rules import (
    DEFAULT_RULE,
    EARLY_STOP_RULES,
    EarlyStop,
    VoteRun,
    run_vote,
    samples_used,
)
from classifier.simulate.samples import (
    PromptSamples,
    Sample,
    TierSamples,
    answer_key,
    read_samples_jsonl,
)

__all__ = [
    "DEFAULT_RULE",
    "EARLY_STOP_RULES",
    "ArmPlan",
    "ArmSummary",
    "EarlyStop",
    "PromptSamples",
    "Sample",
    "SimulatedOutcome",
    "Simulation",
    "SimulationConfig",
    "TierSamples",
    "VoteRun",
    "answer_key",
    "read_samples_jsonl",
    "run_vote",
    "samples_used",
    "simulate",
]

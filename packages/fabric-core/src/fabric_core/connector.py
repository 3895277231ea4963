"""Plan resolution: (arguments, environment variables, installed plugins) -> concrete objects.

A pure function of its inputs that starts no process, so it can be tested directly. The
environment-variable layer (``fabric run`` passing its options to the script) is applied first and
kept apart from the choice logic.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from fabric_core import registry
from fabric_core.errors import MisconfigurationError
from fabric_core.plugins.accelerator import Accelerator
from fabric_core.plugins.checkpoint_io import CheckpointIO
from fabric_core.plugins.environment import ClusterEnvironment
from fabric_core.plugins.precision import Precision
from fabric_core.plugins.strategy import Strategy
from fabric_core.precision.names import normalise_precision
from fabric_core.utilities.interactive import interactive_session

#: Variables ``fabric run`` sets for the options the user gave on the command line.
CLI_ENV = {
    "accelerator": "FABRIC_CLI_ACCELERATOR",
    "strategy": "FABRIC_CLI_STRATEGY",
    "devices": "FABRIC_CLI_DEVICES",
    "num_nodes": "FABRIC_CLI_NUM_NODES",
    "precision": "FABRIC_CLI_PRECISION",
}


@dataclass
class Plan:
    """The concrete objects a ``Fabric`` runs with."""

    accelerator: Accelerator
    strategy: Strategy
    precision: Precision
    cluster_environment: ClusterEnvironment
    devices: list[int]
    num_nodes: int


@dataclass
class Request:
    """The user's arguments after the command-line layer was applied."""

    accelerator: Any = None
    strategy: Any = None
    devices: Any = None
    num_nodes: Any = 1
    precision: Any = 32
    plugins: Any = None


def apply_cli_overrides(request: Request, env: Mapping[str, str]) -> Request:
    """Take options ``fabric run`` passed through the environment; refuse code that contradicts them."""
    defaults = Request()
    for field, var in CLI_ENV.items():
        if var not in env:
            continue
        cli_value: Any = env[var]
        if field == "num_nodes":
            cli_value = int(cli_value)
        code_value = getattr(request, field)
        if code_value is None or code_value == "auto" or code_value == getattr(defaults, field):
            setattr(request, field, cli_value)
        elif str(code_value) != str(cli_value) and not _same_name(code_value, cli_value):
            raise MisconfigurationError(
                f"{field}={code_value!r} in your code conflicts with --{field.replace('_', '-')} {cli_value} given to "
                f"`fabric run`. Remove one of them (the command line is meant to choose it when the code does not)."
            )
    return request


def _same_name(code_value: Any, cli_value: str) -> bool:
    name = getattr(code_value, "name", None)
    return isinstance(name, str) and name == cli_value


def _split_plugins(plugins: Any) -> tuple[Precision | None, ClusterEnvironment | None, CheckpointIO | None]:
    if plugins is None:
        return None, None, None
    items = list(plugins) if isinstance(plugins, Sequence) and not isinstance(plugins, str) else [plugins]
    found: dict[type, Any] = {}
    for item in items:
        for kind in (Precision, ClusterEnvironment, CheckpointIO):
            if isinstance(item, kind):
                if kind in found:
                    raise MisconfigurationError(
                        f"plugins holds more than one {kind.__name__}: {found[kind]!r} and {item!r}."
                    )
                found[kind] = item
                break
        else:
            raise MisconfigurationError(
                f"plugins accepts instances of Precision, ClusterEnvironment or CheckpointIO; got {item!r}. "
                "Pass the accelerator, strategy and precision names through their own arguments."
            )
    return found.get(Precision), found.get(ClusterEnvironment), found.get(CheckpointIO)


def _choose_accelerator(accelerator: Any) -> Accelerator:
    if isinstance(accelerator, Accelerator):
        return accelerator
    if accelerator is None or accelerator == "auto":
        candidates = []
        for name in registry.available("accelerator"):
            try:
                cls = registry.load("accelerator", name)
            except ImportError:
                continue  # a broken optional backend must not stop CPU training
            priority = cls.auto_select_priority()
            if priority is not None:
                candidates.append((priority, cls))
        return max(candidates, key=lambda pair: pair[0])[1]()
    if not isinstance(accelerator, str):
        raise MisconfigurationError(
            f"accelerator must be a name or an Accelerator instance, got {type(accelerator).__name__}. "
            f"Installed names: 'auto', {', '.join(repr(n) for n in sorted(registry.available('accelerator')))}."
        )
    cls = registry.load("accelerator", accelerator)
    if not cls.is_available():
        reason = cls.unavailable_reason()
        raise MisconfigurationError(
            f"accelerator={accelerator!r} was requested, but no {accelerator} device is available on this machine"
            f"{f' ({reason})' if reason else ''}. Use accelerator='auto' to pick what is available, or accelerator='cpu'."
        )
    return cls()


def _choose_environment(environment: ClusterEnvironment | None, env: Mapping[str, str]) -> ClusterEnvironment:
    if environment is not None:
        return environment
    classes = [registry.load("environment", name) for name in registry.available("environment")]
    classes.sort(key=lambda c: c.detect_priority, reverse=True)
    for cls in classes:
        if cls.detect(env):
            return cls(env=None if env is os.environ else env)
    raise MisconfigurationError(
        "No cluster environment matched, not even the local default; is fabric-core installed correctly?"
    )


def _validate_num_nodes(num_nodes: Any) -> int:
    if isinstance(num_nodes, bool) or not isinstance(num_nodes, int) or num_nodes < 1:
        raise MisconfigurationError(f"num_nodes must be a positive int, got {num_nodes!r}.")
    return num_nodes


def _make_strategy(strategy: Any, accelerator: Accelerator, num_processes: int) -> Strategy:
    if isinstance(strategy, Strategy):
        return strategy
    if strategy is None or strategy == "auto":
        strategy = accelerator.auto_strategy(num_processes)
        if strategy == "ddp" and interactive_session():
            strategy = "ddp_notebook"  # as Lightning: a notebook or REPL cannot re-run itself, so fork
    if not isinstance(strategy, str):
        raise MisconfigurationError(
            f"strategy must be a name or a Strategy instance, got {type(strategy).__name__}. "
            f"Installed names: 'auto', {', '.join(repr(n) for n in sorted(registry.available('strategy')))}."
        )
    factory = registry.load("strategy", strategy)
    made = factory()
    if not isinstance(made, Strategy):
        raise MisconfigurationError(
            f"The plugin registered as strategy {strategy!r} did not produce a Strategy (got {made!r})."
        )
    return made


def _claim(strategy: Strategy) -> None:
    """A strategy object serves one Fabric: it holds that Fabric's devices, precision and process group.

    Sharing one between two Fabrics would make the second silently rewire the first (its precision,
    its devices), so a second use is refused. The strategy a user passes is otherwise used as is,
    so ``fabric.strategy is strategy`` holds as in Lightning.
    """
    if getattr(strategy, "_fabric_plan_resolved", False):
        raise MisconfigurationError(
            f"This {type(strategy).__name__} object was already given to another Fabric; a strategy holds the devices, "
            "precision and process group of the Fabric it serves. Create a new strategy object for each Fabric."
        )
    strategy._fabric_plan_resolved = True  # type: ignore[attr-defined]


def resolve_plan(
    accelerator: Any = None,
    strategy: Any = None,
    devices: Any = None,
    num_nodes: Any = 1,
    precision: Any = 32,
    plugins: Any = None,
    env: Mapping[str, str] | None = None,
) -> Plan:
    """Choose and wire the accelerator, strategy, precision and environment; raise on anything invalid."""
    env = os.environ if env is None else env
    request = apply_cli_overrides(Request(accelerator, strategy, devices, num_nodes, precision, plugins), env)
    precision_plugin, environment_plugin, checkpoint_io = _split_plugins(request.plugins)
    num_nodes = _validate_num_nodes(request.num_nodes)

    if (
        isinstance(request.strategy, Strategy)
        and request.strategy.accelerator is not None
        and request.accelerator in (None, "auto")
    ):
        accelerator_obj = request.strategy.accelerator
    else:
        accelerator_obj = _choose_accelerator(request.accelerator)
    environment = _choose_environment(environment_plugin, env)

    if request.devices in (None, "auto") and environment.creates_processes_externally:
        per_node = environment.local_world_size() or max(1, environment.world_size() // num_nodes)
        if num_nodes == 1 and environment.world_size() > per_node:
            num_nodes = environment.world_size() // per_node
        device_indices = (
            list(range(per_node)) if accelerator_obj.name == "cpu" else accelerator_obj.parse_devices(per_node)
        )
    else:
        device_indices = accelerator_obj.parse_devices(request.devices)
    num_processes = len(device_indices) * num_nodes

    strategy_obj = _make_strategy(request.strategy, accelerator_obj, num_processes)
    supported = strategy_obj.supported_accelerators
    if supported is not None and accelerator_obj.name not in supported:
        raise MisconfigurationError(
            f"strategy {strategy_obj.name!r} does not run on accelerator {accelerator_obj.name!r}; it supports "
            f"{', '.join(repr(a) for a in supported)}."
        )
    if not strategy_obj.is_distributed and num_processes > 1 and not strategy_obj.one_process_drives_all_devices:
        raise MisconfigurationError(
            f"strategy {strategy_obj.name!r} runs one process, but devices={request.devices!r} and num_nodes={num_nodes} "
            f"ask for {num_processes}. Use strategy='ddp' (or 'auto') for several devices."
        )

    if precision_plugin is None:
        extra = tuple(registry.available("precision"))
        name = normalise_precision(request.precision, extra)
        accelerator_obj.check_precision(name)
        precision_plugin = (
            strategy_obj.create_precision(name, accelerator_obj)
            or accelerator_obj.create_precision(name)
            or registry.load("precision", name)(accelerator_obj.get_device(device_indices[0]).type)
        )
    elif request.precision not in (None, 32, "32", "32-true", precision_plugin.name):
        raise MisconfigurationError(
            f"precision={request.precision!r} conflicts with the precision plugin {precision_plugin!r} in plugins; pass one."
        )

    environment.validate_settings(num_devices=len(device_indices), num_nodes=num_nodes)
    _claim(strategy_obj)
    strategy_obj.accelerator = accelerator_obj
    strategy_obj.precision = precision_plugin
    strategy_obj.cluster_environment = environment
    strategy_obj.parallel_devices = [accelerator_obj.get_device(i) for i in device_indices]
    strategy_obj.num_nodes = num_nodes
    if checkpoint_io is not None:
        strategy_obj.checkpoint_io = checkpoint_io
    strategy_obj.validate()
    strategy_obj.configure_launcher()
    launcher = strategy_obj.launcher
    if launcher is not None and not launcher.is_interactive_compatible and interactive_session():
        raise MisconfigurationError(
            f"strategy={strategy_obj.name!r} re-runs the script for the other processes, which an interactive session "
            "(notebook, REPL) does not have. Run your code as a script, or use strategy='ddp_notebook' (forked "
            "processes)."
        )
    return Plan(accelerator_obj, strategy_obj, precision_plugin, environment, device_indices, num_nodes)

"""The sampler registry: :data:`SAMPLERS` (the one list of choices configs, the CLI and
system names derive from), :func:`register_sampler`, and plug-ins named
``"package.module:Name"``."""

from __future__ import annotations

import inspect

from diffbench.core.errors import InputError
from diffbench.core.plugins import SAMPLER_GROUP, failed_text, is_spec, load_installed, load_object
from diffbench.sampling.base import Sampler
from diffbench.sampling.diffusers_adapter import check_diffusers, diffusers_sampler, is_scheduler
from diffbench.sampling.schedule import NoiseSchedule

SAMPLERS: dict[str, type[Sampler]] = {}
"""Registered samplers by name, in registration order (``ddpm``, ``ddim``, then any others)."""
ORIGINS: dict[str, str] = {}
"""Sampler name -> the installed package that declares it (entry point); built-ins absent."""
PLUGIN_SAMPLER = (
    "a plug-in sampler is 'package.module:Name' naming a subclass of "
    "diffbench.sampling.Sampler that provides update() (one step from x0 and eps), solve() (a "
    "step with history or more than one evaluation), advance() or advance_with() (VP steps "
    "from eps) or denoise() (the whole loop); or a diffusers scheduler class, e.g. "
    "'diffusers:DDIMScheduler'"
)


def register_sampler(name: str, label: str | None = None):
    """Class decorator: register a :class:`Sampler` subclass under ``name``; ``label`` (default
    ``name.upper()``) names its systems, e.g. ``DDIM-50``."""

    def register(cls: type[Sampler]) -> type[Sampler]:
        check_sampler_class(cls, name)
        cls.name, cls.label = name, label or name.upper()
        SAMPLERS[name] = cls
        return cls

    return register


def check_sampler_class(cls: object, spec: str) -> None:
    """Raise a ValueError unless ``cls`` is a usable :class:`Sampler` subclass."""
    if not (isinstance(cls, type) and issubclass(cls, Sampler)) or cls is Sampler:
        raise InputError(f"sampler {spec!r} is {cls!r}, not a Sampler subclass; {PLUGIN_SAMPLER}")
    hooks = ("update", "solve", "advance", "advance_with", "denoise")
    if all(getattr(cls, hook) is getattr(Sampler, hook) for hook in hooks):
        raise InputError(f"sampler {spec!r} provides none of update(), solve(), advance(), "
                         f"advance_with(), denoise(); {PLUGIN_SAMPLER}")


def register_installed() -> None:
    """Register the samplers installed packages declare in the ``diffbench.samplers``
    entry-point group, each under its entry-point name (a class its module already registered
    keeps that registration), labelled by its ``label`` or its class name less ``Sampler``. One
    :class:`~diffbench.core.plugins.PluginWarning` per entry point that fails to load, is no
    Sampler or would replace another sampler; the others register."""
    import warnings

    from diffbench.core.plugins import PluginWarning

    for name, (cls, origin) in load_installed(SAMPLER_GROUP, PLUGIN_SAMPLER).items():
        try:
            check_sampler_class(cls, name)
        except InputError as error:
            warnings.warn(f"installed sampler {name!r} from {origin} skipped: {error}",
                          PluginWarning, stacklevel=2)
            continue
        if SAMPLERS.get(cls.name) is cls:  # its module registered it
            ORIGINS.setdefault(cls.name, origin)
            if cls.name != name:
                warnings.warn(f"installed sampler {name!r} from {origin} is registered as "
                              f"{cls.name!r} by its module", PluginWarning, stacklevel=2)
        elif name in SAMPLERS:
            warnings.warn(f"installed sampler {name!r} from {origin} skipped: the name is "
                          f"{SAMPLERS[name].__module__}'s {SAMPLERS[name].__name__}",
                          PluginWarning, stacklevel=2)
        else:
            register_sampler(name, cls.label)(cls)
            ORIGINS[name] = origin


def sampler_class(name: str) -> type[Sampler]:
    """The sampler registered as ``name``, the class a ``"package.module:Name"`` names, or the
    adapter of the diffusers scheduler class it names (``"diffusers:DDIMScheduler"``)."""
    if name in SAMPLERS:
        return SAMPLERS[name]
    if not is_spec(name):
        raise InputError(f"unknown sampler {name!r}; allowed: {', '.join(SAMPLERS)} or "
                         f"'package.module:Name' ({PLUGIN_SAMPLER})"
                         f"{failed_text(SAMPLER_GROUP)}")
    check_diffusers(name)
    cls = load_object(name, PLUGIN_SAMPLER)
    if is_scheduler(cls):  # diffbench.sampling.diffusers_adapter wraps it
        return diffusers_sampler(cls, name)
    check_sampler_class(cls, name)
    return cls


FLOW_VERSIONS = {"euler": "flow-euler", "heun": "flow-heun", "dpmsolver++": "flow-dpmsolver++"}
"""A VP sampler's name -> its flow version's, for a system keyed ``{prediction: flow,
sampler: euler}``."""


def resolve_sampler(name: str, prediction: str = "eps") -> str:
    """The sampler a system of a network predicting ``prediction`` runs for ``name``: for a
    flow network ``euler``, ``heun`` and ``dpmsolver++`` mean their flow versions."""
    if prediction == "flow":
        return FLOW_VERSIONS.get(name, name)
    return name


def make_sampler(
    name: str,
    schedule: NoiseSchedule,
    num_steps: int | None = None,
    clip_sample: bool = True,
    eta: float = 0.0,
    shift: float = 1.0,
    spacing: str | None = None,
    prediction: str | None = None,
) -> Sampler:
    """The sampler ``name`` (registered or ``package.module:Name``) with ``num_steps`` and
    ``spacing`` (None: its defaults), for a network predicting ``prediction`` (None: the
    sampler's default), and for samplers that take them ``eta`` (DDIM) and ``shift`` (SD3's
    timestep shift, on the flow path)."""
    cls = sampler_class(name)
    parameters = inspect.signature(cls).parameters
    forwards = any(p.kind is p.VAR_KEYWORD for p in parameters.values())
    options = {}
    for option, value, default in (("eta", eta, 0.0), ("shift", shift, 1.0),
                                   ("prediction", prediction, None)):
        if option in parameters or (forwards and option != "eta"):
            options[option] = value
        elif value != default:
            takers = [c.label for c in SAMPLERS.values()
                      if option in inspect.signature(c).parameters]
            plural = "s" if len(takers) > 1 else ""
            raise InputError(f"{option} applies to the {' and '.join(takers)} sampler{plural} "
                             f"only, got {option}={value!r} with {name}")
    if spacing is not None:  # else the class's default (a plug-in need not take it)
        options["spacing"] = spacing
    return cls(schedule, num_steps, clip_sample=clip_sample, **options)

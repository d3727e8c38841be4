"""Client-side mods (Flower's composable client concerns) for client-level DP and secure aggregation.

The ClientApp always carries the same mods; each acts only on the messages that ask for it, so one
ClientApp serves plain, client-level-DP and SecAgg+ federations alike. Order, outermost first:

1. `secure_aggregation_mod`: Flower's `secaggplus_mod` for SecAgg+ messages (it masks the update it
   gets back, so the server only ever sees the sum of all clients' updates).
2. `legacy_train_mod`: SecAgg+ runs in Flower's legacy workflow, which speaks FitIns/FitRes. This
   translates them to and from the message format `client.app.train` speaks.
3. `update_clipping_mod`: Flower's `fixedclipping_mod` when the server asks for client-side clipping
   (client-level DP, required under SecAgg+ where the server cannot clip).
"""

from __future__ import annotations

import json
import warnings

from flwr.app import ConfigRecord, Context, Message, RecordDict
from flwr.client.mod import secaggplus_mod
from flwr.clientapp.mod import fixedclipping_mod
from flwr.clientapp.typing import ClientAppCallable, Mod
from flwr.common import Code, FitRes, Status, ndarrays_to_parameters, parameters_to_ndarrays
from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS
from flwr.compat.common.recorddict_compat import fitres_to_recorddict, recorddict_to_fitins
from flwr.supercore.differential_privacy import KEY_CLIPPING_NORM

from shared.adapters import ADAPTER_NAMES, WEIGHT, record_from_list

# Two warnings every private round raises in a client process (client/train.py), known to be harmless here:
# - Opacus' "Secure RNG turned off": Opacus' secure_mode would draw its noise from torchcsprng, which has
#   no build for this torch; the noise generator we hand Opacus is instead seeded afresh from the OS's
#   secure source every round (client/randomness.py), so the server cannot predict the noise.
# - torch's "Full backward hook is firing ... no inputs require gradients": Opacus' per-sample gradient
#   hooks sit on layers whose inputs (token ids, frozen encoder outputs) need no gradient; the hooks use
#   the gradient of the layers' outputs and their saved activations, which are all there.
warnings.filterwarnings("ignore", message="Secure RNG turned off", category=UserWarning)
warnings.filterwarnings("ignore", message="Full backward hook is firing", category=UserWarning)


def only_when(applies, mod: Mod) -> Mod:
    """`mod` for the messages `applies` accepts; every other message passes straight through."""

    def conditional(msg: Message, ctxt: Context, call_next: ClientAppCallable) -> Message:
        return mod(msg, ctxt, call_next) if applies(msg) else call_next(msg, ctxt)

    conditional.__name__ = f"{mod.__name__}_when_asked"
    return conditional


def _is_secagg(msg: Message) -> bool:
    return msg.has_content() and RECORD_KEY_CONFIGS in msg.content.config_records


def _asks_clipping(msg: Message) -> bool:
    return msg.has_content() and any(KEY_CLIPPING_NORM in c for c in msg.content.config_records.values())


secure_aggregation_mod = only_when(_is_secagg, secaggplus_mod)
update_clipping_mod = only_when(_asks_clipping, fixedclipping_mod)


def legacy_train_mod(msg: Message, ctxt: Context, call_next: ClientAppCallable) -> Message:
    """FitIns -> {"arrays", "config"} -> train -> FitRes (weight: the reply's unit-weight, 1 by default)."""
    if not (msg.has_content() and "fitins.parameters" in msg.content.array_records):
        return call_next(msg, ctxt)
    fitins = recorddict_to_fitins(msg.content, keep_input=True)
    config = dict(fitins.config)
    names = json.loads(str(config.pop(ADAPTER_NAMES)))
    arrays = record_from_list(parameters_to_ndarrays(fitins.parameters), names)
    msg.content = RecordDict({"arrays": arrays, "config": ConfigRecord(config)})
    reply = call_next(msg, ctxt)
    if reply.has_error():  # e.g. the budget cap: SecAgg+ has no error reply, so the client drops out
        raise RuntimeError(f"not taking part in this SecAgg+ round: {reply.error.reason}")
    out = reply.content
    record = out["arrays"]
    metrics = dict(out["metrics"])
    weight = int(metrics.get(WEIGHT, 1))
    flat = {k: v for k, v in metrics.items() if k != WEIGHT}
    if "privacy" in out:
        flat.update({f"privacy:{k}": v for k, v in out["privacy"].items()})
    fitres = FitRes(
        status=Status(code=Code.OK, message="ok"),
        parameters=ndarrays_to_parameters([record[name].numpy() for name in names]),
        num_examples=weight,
        metrics=flat,
    )
    reply.content = fitres_to_recorddict(fitres, keep_input=False)
    return reply

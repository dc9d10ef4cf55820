"""The callbacks every run gets, in the order their hooks run: the watchdog and straggler figures (operations), the
train.* switches (EMA, early stopping), the recipe's, the config's `callbacks:` list, and last the tests' fault
injection (dist_train.callbacks.fault_injection). Each optional one is imported only when the config asks for it."""

from __future__ import annotations

from dist_train.callbacks import CallbackList


def build_callbacks(config, recipe) -> CallbackList:
    from dist_train.callbacks.fault_injection import FaultInjection
    from dist_train.callbacks.stragglers import Stragglers

    callbacks = [Stragglers()]
    if config.watchdog.timeout_s is not None:
        from dist_train.callbacks.watchdog import HangWatchdog

        callbacks.append(HangWatchdog(config.watchdog))
    if config.train.ema is not None:
        from dist_train.callbacks.ema import EMA, EMAConfig

        callbacks.append(EMA(EMAConfig(config.train.ema)))
    if config.train.early_stopping is not None:
        from dist_train.callbacks.early_stopping import EarlyStopping

        callbacks.append(EarlyStopping(config.train.early_stopping))
    callbacks += recipe.callbacks()
    callbacks += [spec.build() for spec in config.callbacks]
    injected = FaultInjection.from_environment()
    return CallbackList(callbacks + ([injected] if injected else []))

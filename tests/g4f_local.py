"""A gpt4free provider class (g4f's own OpenAI template) pointed at the local emulator, so the
tests drive real g4f code through ``-m g4f_local.EmulatorProvider:MODEL`` offline."""

from __future__ import annotations

import os

from g4f.Provider.template import OpenaiTemplate


class EmulatorProvider(OpenaiTemplate):
    label = "Emulator"
    working = True
    supports_stream = True
    default_model = "emu-mini"
    models = ["emu-mini", "emu-large"]
    needs_auth = False
    base_url = os.environ.get("G4F_EMULATOR_URL", "http://127.0.0.1:9/v1")

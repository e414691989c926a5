"""eSpeak NG through ctypes: text in, 22,050 Hz int16 speech out, with no system install.

The `espeakng-loader` wheel ships libespeak-ng and its voice data. The C library keeps one
global synthesizer per process (voice, parameters, and wave-generator state such as the pitch
flutter phase), so there is one `Espeak` per process (`get_espeak()`), and a given call
sequence in a fresh process always yields the same samples. The dataset writer relies on this:
it runs each speaker in a fresh worker process.
"""
from __future__ import annotations

import ctypes
import functools
from pathlib import Path

import espeakng_loader
import numpy as np

SAMPLE_RATE = 22050

_AUDIO_OUTPUT_SYNCHRONOUS = 2
_INITIALIZE_DONT_EXIT = 0x8000     # report errors instead of calling exit()
_POS_CHARACTER = 1
_CHARS_UTF8 = 1
_RATE, _VOLUME, _PITCH, _RANGE = 1, 2, 3, 4
# name: (parameter id, lowest, highest), as documented in speak_lib.h
_PARAMETERS = {"rate": (_RATE, 80, 450), "volume": (_VOLUME, 0, 200),
               "pitch": (_PITCH, 0, 100), "pitch_range": (_RANGE, 0, 100)}
_SynthCallback = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int,
                                  ctypes.c_void_p)


class Espeak:
    """libespeak-ng in synchronous mode; loads and initialises on first use."""

    def __init__(self) -> None:
        self._lib: ctypes.CDLL | None = None
        self._chunks: list[np.ndarray] = []
        self._callback = _SynthCallback(self._collect)   # kept alive as long as the library uses it

    def _collect(self, wav, num_samples: int, events) -> int:
        if wav and num_samples > 0:
            self._chunks.append(np.ctypeslib.as_array(wav, shape=(num_samples,)).copy())
        return 0   # 0 = keep synthesizing

    @property
    def lib(self) -> ctypes.CDLL:
        if self._lib is None:
            lib = ctypes.CDLL(espeakng_loader.get_library_path())
            lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p,
                                              ctypes.c_int]
            lib.espeak_SetSynthCallback.argtypes = [_SynthCallback]
            lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
            lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
            lib.espeak_Synth.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint,
                                         ctypes.c_int, ctypes.c_uint, ctypes.c_uint,
                                         ctypes.c_void_p, ctypes.c_void_p]
            lib.espeak_Info.argtypes = [ctypes.c_void_p]
            lib.espeak_Info.restype = ctypes.c_char_p
            lib.espeak_ng_SetRandSeed.argtypes = [ctypes.c_long]
            rate = lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0,
                                         espeakng_loader.get_data_path().encode(),
                                         _INITIALIZE_DONT_EXIT)
            if rate != SAMPLE_RATE:
                raise RuntimeError(f"espeak_Initialize with data {espeakng_loader.get_data_path()} "
                                   f"returned "
                                   f"{rate}, expected the sample rate {SAMPLE_RATE}")
            lib.espeak_SetSynthCallback(self._callback)
            lib.espeak_ng_SetRandSeed(0)   # breath noise; initialisation seeds it with the time
            self._lib = lib
        return self._lib

    def version(self) -> str:
        return self.lib.espeak_Info(None).decode()

    def synthesize(self, text: str, voice: str = "en", rate: int = 175, pitch: int = 50,
                   pitch_range: int = 50, volume: int = 100) -> np.ndarray:
        """Speak `text`: int16 samples at SAMPLE_RATE. `voice` is "language[+variant]", e.g.
        "en-us+f3"; rate in words per minute, pitch and pitch_range 0-100 (50 = the voice's own),
        volume 0-200."""
        self._set_voice(voice)
        for name, value in (("rate", rate), ("pitch", pitch), ("pitch_range", pitch_range),
                            ("volume", volume)):
            code, low, high = _PARAMETERS[name]
            if not low <= value <= high:
                raise ValueError(f"eSpeak {name}={value} is out of range: expected {low}..{high}")
            self.lib.espeak_SetParameter(code, int(value), 0)
        data = text.encode()
        self._chunks = []
        status = self.lib.espeak_Synth(data, len(data) + 1, 0, _POS_CHARACTER, 0, _CHARS_UTF8,
                                       None, None)
        if status != 0:
            raise RuntimeError(f"espeak_Synth failed with status {status} on {text!r}")
        return np.concatenate(self._chunks) if self._chunks else np.zeros(0, np.int16)

    def _set_voice(self, voice: str) -> None:
        variant = voice.partition("+")[2]
        # the library silently ignores an unknown variant, so check it against the shipped files
        if variant and variant not in variants():
            raise ValueError(f"unknown eSpeak voice variant {variant!r} in {voice!r}: expected "
                             "one of "
                             f"{', '.join(variants())}")
        if self.lib.espeak_SetVoiceByName(voice.encode()) != 0:
            raise ValueError(f"unknown eSpeak voice {voice!r}: expected a voice of the shipped "
                             "data such as "
                             "'en', 'en-us' or 'en-gb-scotland', optionally with '+variant' "
                             "(e.g. 'en-us+f3')")


@functools.cache
def get_espeak() -> Espeak:
    """The process's one synthesizer."""
    return Espeak()


@functools.cache
def variants() -> tuple[str, ...]:
    """Voice variants shipped with the data (timbre presets such as f3, m2, klatt4, whisper).
    Names with spaces are left out: "language+variant" cannot carry them."""
    folder = Path(espeakng_loader.get_data_path()) / "voices" / "!v"
    return tuple(sorted(p.name for p in folder.iterdir() if p.is_file() and " " not in p.name))

"""Common English words by part of speech, for the prompt sentences of the demo corpus.

The lists are small on purpose (a few hundred everyday words), grouped so that the sentence
templates of :mod:`datamodules.demo_corpus` always produce grammatical text.
"""

from __future__ import annotations

NAMES: tuple[str, ...] = (
    "Anna", "Ben", "Clara", "David", "Emma", "Frank", "Grace", "Henry", "Iris", "Jack", "Kate", "Leo",
    "Maria", "Nora", "Oscar", "Paul", "Rosa", "Sam", "Tom", "Vera",
)
BEINGS: tuple[str, ...] = (
    "dog", "cat", "bird", "horse", "child", "teacher", "doctor", "farmer", "driver", "friend", "neighbour",
    "student", "baker", "sailor", "painter", "king", "queen", "girl", "boy", "man", "woman", "family",
)
"""Nouns that can be the subject of any verb of the lists."""
NOUNS: tuple[str, ...] = BEINGS + (
    "book", "letter", "table", "chair", "window", "door", "garden", "river", "mountain", "forest", "road",
    "house", "car", "train", "boat", "bridge", "city", "village", "market", "school", "kitchen", "room",
    "apple", "bread", "coffee", "cake", "flower", "tree", "stone", "ball", "box", "bag", "hat", "coat",
    "song", "story", "picture", "paper", "phone", "clock", "lamp", "key", "cup", "plate", "bottle",
    "shoe", "map", "ticket", "radio", "camera", "bicycle", "candle", "basket", "blanket", "pencil",
)
PLACES: tuple[str, ...] = (
    "the park", "the station", "the beach", "the office", "the library", "the museum", "the church",
    "the harbour", "the hospital", "the hotel", "the farm", "the shop", "the garden", "the lake",
    "the hill", "the valley", "the island", "the square", "the bakery", "the theatre",
)
ADJECTIVES: tuple[str, ...] = (
    "big", "small", "old", "young", "new", "happy", "quiet", "loud", "bright", "dark", "warm", "cold",
    "green", "blue", "red", "yellow", "white", "black", "brown", "clean", "busy", "lazy", "clever",
    "gentle", "brave", "tired", "hungry", "funny", "strange", "lovely", "heavy", "light", "soft",
    "tall", "short", "wide", "narrow", "early", "late", "famous", "simple", "careful", "friendly",
)
VERBS_PAST: tuple[str, ...] = (
    "found", "saw", "took", "made", "gave", "brought", "bought", "sold", "painted", "opened", "closed",
    "washed", "carried", "followed", "watched", "cleaned", "moved", "dropped", "lifted", "pushed",
    "pulled", "kept", "left", "held", "wanted", "liked", "loved", "needed", "fixed", "built", "drew",
    "wrote", "read", "counted", "checked", "shared", "hid", "caught", "threw", "visited",
)
VERBS_INTRANSITIVE: tuple[str, ...] = (
    "walked", "ran", "sang", "danced", "slept", "waited", "smiled", "laughed", "worked", "played",
    "travelled", "arrived", "listened", "rested", "talked", "jumped", "swam", "cooked", "studied", "stayed",
)
ADVERBS: tuple[str, ...] = (
    "slowly", "quickly", "quietly", "happily", "carefully", "early", "later", "again", "together",
    "today", "yesterday", "often", "suddenly", "gently", "proudly", "softly",
)
TIMES: tuple[str, ...] = (
    "in the morning", "at noon", "after lunch", "in the evening", "at night", "on Monday", "on Sunday",
    "last week", "before dinner", "during the summer", "in the winter", "every day", "this afternoon",
)
PREPOSITIONS: tuple[str, ...] = ("near", "behind", "beside", "inside", "under", "across", "around", "along")
CONJUNCTIONS: tuple[str, ...] = ("and then", "because", "while", "but later", "so")

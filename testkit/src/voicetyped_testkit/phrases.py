"""Call-style caller phrases for measuring recognition accuracy, in two disjoint sets.

- :data:`TUNING`: what front-end, model and decoding choices may be tuned on (the research
  harness ``images/speech/bench/asr_accuracy.py``, unit tests of the accuracy tooling, other
  benchmarks that need caller phrases).
- :data:`HELD_OUT`: the evaluation set of ``bench/recognition.py``. Nothing tunes on it and no
  test or other benchmark uses it, so its WER says how the recogniser does on words it was not
  adjusted to. Do not add these phrases to prompts, biasing lists or tests.

Both cover what callers say to a phone bot: yes/no, menu choices, order, account and reference
numbers, addresses, names, dates and times, asking for a person, thanks and goodbyes. None of
them is a phrase the speech tests and benchmarks already use. The references are written as
spoken (numbers in words); :func:`voicetyped_testkit.speech.words` normalises both sides.
"""

from __future__ import annotations

TUNING: tuple[str, ...] = (
    "Yes, that's right.",
    "No, that's not it.",
    "Goodbye.",
    "Thank you very much.",
    "Sure, go ahead.",
    "Not right now, thanks.",
    "Option three, please.",
    "The second one.",
    "Main menu.",
    "I'd like to speak to someone in billing.",
    "Put me through to a real person.",
    "My order number is seven three nine zero five.",
    "Reference number eight one six two.",
    "The card ends in four nine one seven.",
    "My phone number is five five five, two one eight, four four seven.",
    "I live at forty two Elm Road.",
    "The account is under the name Sarah Mitchell.",
    "My surname is Thompson.",
    "Can you send it on the fifth of June?",
    "Tuesday afternoon works for me.",
    "I want to book an appointment for Friday.",
    "I need to change my delivery address.",
    "I'd like to cancel my subscription.",
    "The parcel never arrived.",
    "It was about sixty dollars.",
    "Could you repeat the last part?",
    "I'm calling about a refund.",
    "Can I pay by card?",
    "I'd like to report a problem with my bill.",
    "That's all for today.",
)

HELD_OUT: tuple[str, ...] = (
    "Yes, please go ahead.",
    "No, I don't think so.",
    "That's correct.",
    "No, that's wrong.",
    "Yes, absolutely.",
    "Okay, goodbye then.",
    "Thanks so much for your help.",
    "No thanks, that's everything.",
    "I'd like option one.",
    "The first option.",
    "Customer service, please.",
    "I'd like to talk to an agent, please.",
    "I'd like to speak with a manager.",
    "My order number is six one eight four two.",
    "My account number is three three zero seven nine one.",
    "The reference is four two nine one.",
    "The delivery address is twelve Baker Street.",
    "I live at eighty five Oak Avenue.",
    "The booking is under the name David Green.",
    "My first name is Emily.",
    "My appointment is on the twenty first of March.",
    "Can I come in next Monday morning?",
    "My date of birth is the ninth of October, nineteen eighty.",
    "Please call me back at seven o'clock.",
    "It should arrive on Wednesday.",
    "I want to return a pair of shoes.",
    "The package was damaged when it arrived.",
    "I was charged the wrong amount.",
    "I'd like to pay my bill.",
    "Can you check my balance?",
    "I need to reschedule my delivery.",
    "How much does it cost?",
    "I'm not sure, let me check.",
    "Could you spell that for me?",
    "I've already tried restarting it.",
    "Billing, please.",
)

SETS: dict[str, tuple[str, ...]] = {"tuning": TUNING, "held-out": HELD_OUT}

"""Built-in generated datasets (`data.path: builtin:NAME`): deterministic, offline, seeded.

`person-extraction` is the quickstart task: a sentence about a person -> a JSON record with fixed keys in a
fixed order. The base model cannot guess the exact keys and layout; a LoRA adapter learns them in a few
hundred steps, so exact match before/after shows that training worked. `person-preference` pairs the same kind
of prompt with its correct record (chosen) and a subtly wrong one (rejected): preference tuning's demo task.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass

FIRST = (
    "Maria", "James", "Aiko", "Olu", "Sofia", "Liam", "Priya", "Mateo", "Elena", "Kwame", "Hannah", "Ravi", "Chloe",
    "Tomas", "Amara", "Noah", "Ingrid", "Yusuf", "Lucia", "Omar", "Freya", "Diego", "Mei", "Jonas", "Zara", "Felix",
    "Nadia", "Hugo", "Leila", "Anton", "Grace", "Kenji", "Alma", "Victor", "Rosa", "Emil", "Sana", "Pablo", "Ines",
    "Arjun", "Clara", "Malik", "Vera", "Oscar", "Lena", "Tariq", "Julia", "Bruno", "Ada", "Samir",
)
LAST = (
    "Lopez", "Smith", "Tanaka", "Adeyemi", "Rossi", "Murphy", "Sharma", "Garcia", "Petrova", "Mensah", "Schmidt",
    "Patel", "Dubois", "Novak", "Okafor", "Brown", "Larsen", "Demir", "Fernandez", "Haddad", "Nilsson", "Morales",
    "Chen", "Becker", "Khan", "Wagner", "Ivanova", "Moreau", "Rahman", "Horvat", "Kim", "Sato", "Silva", "Costa",
    "Berg", "Ali", "Young", "Walsh", "Kowalski", "Reyes",
)
CITIES = (
    "Lisbon", "Boston", "Osaka", "Lagos", "Milan", "Dublin", "Pune", "Seville", "Sofia", "Accra", "Hamburg", "Nairobi",
    "Lyon", "Prague", "Toronto", "Oslo", "Izmir", "Cordoba", "Beirut", "Malmo", "Quito", "Shanghai", "Munich", "Karachi",
    "Vienna", "Kyiv", "Marseille", "Dhaka", "Zagreb", "Seoul", "Sapporo", "Recife", "Porto", "Cairo", "Denver",
    "Cork", "Krakow", "Manila", "Helsinki", "Lima",
)
JOBS = (
    "dentist", "teacher", "nurse", "architect", "chef", "pilot", "engineer", "librarian", "pharmacist", "carpenter",
    "journalist", "plumber", "accountant", "photographer", "veterinarian", "electrician", "baker", "lawyer",
    "translator", "gardener", "physicist", "firefighter", "designer", "mechanic", "economist", "florist", "surgeon",
    "painter", "geologist", "tailor",
)
TEMPLATES = (
    "{name}, a {age}-year-old {job}, lives in {city}.",
    "{name} is {age} years old and works as a {job} in {city}.",
    "Meet {name}: {job}, {age}, based in {city}.",
    "In {city}, {name} has been a {job} for years; {name_first} turned {age} this spring.",
    "The {job} {name} ({age}) moved to {city} last year.",
    "At {age}, {name} is the best-known {job} in {city}.",
    "{name} from {city} is a {job} aged {age}.",
    "Our new neighbour in {city} is {name}, {age}, who works as a {job}.",
    "{name} ({city}) - occupation: {job}; age: {age}.",
    "Born {age} years ago, {name} now works as a {job} and lives in {city}.",
)
INSTRUCTION = "Extract the person described below as a JSON record.\n\n"


@dataclass(frozen=True)
class BuiltinData:
    train: list[dict]
    eval: list[dict]
    format: str


def _person(rng: random.Random) -> tuple[str, str]:
    first, last = rng.choice(FIRST), rng.choice(LAST)
    age, city, job = rng.randint(19, 88), rng.choice(CITIES), rng.choice(JOBS)
    sentence = rng.choice(TEMPLATES).format(name=f"{first} {last}", name_first=first, age=age, city=city, job=job)
    record = {"name": f"{first} {last}", "age": age, "city": city, "occupation": job}
    return sentence, json.dumps(record)


def person_extraction(n_train: int, n_eval: int, seed: int) -> BuiltinData:
    """Disjoint train/eval rows: an eval sentence never appears in training."""
    rng = random.Random(seed)
    seen: set[str] = set()
    rows: list[dict] = []
    while len(rows) < n_train + n_eval:
        sentence, answer = _person(rng)
        if sentence in seen:
            continue
        seen.add(sentence)
        rows.append({"messages": [
            {"role": "user", "content": INSTRUCTION + sentence},
            {"role": "assistant", "content": answer},
        ]})
    return BuiltinData(train=rows[n_eval:], eval=rows[:n_eval], format="chat")


def _subtly_wrong(record: dict, rng: random.Random) -> dict:
    """The same record with one field wrong in a way a reader checking the sentence would catch."""
    wrong = dict(record)
    field = rng.choice(("name", "age", "city", "occupation"))
    if field == "age":
        wrong["age"] = record["age"] + rng.choice((-3, -2, -1, 1, 2, 3))
    elif field == "name":
        first, last = record["name"].split(" ")
        wrong["name"] = f"{last} {first}" if rng.random() < 0.5 else first
    else:
        pool = CITIES if field == "city" else JOBS
        wrong[field] = rng.choice([x for x in pool if x != record[field]])
    return wrong


def person_preference(n_train: int, n_eval: int, seed: int) -> BuiltinData:
    """The quickstart's prompts with a correct record (chosen) and one with a single wrong field (rejected). The
    SFT task's own sentences are not reused: the seed is offset, and the eval prompts are disjoint from training."""
    sft = person_extraction(n_train, n_eval, seed + 1)
    rng = random.Random(seed)

    def pair(row: dict) -> dict:
        user, answer = row["messages"]
        record = json.loads(answer["content"])
        return {"prompt": [user], "chosen": answer["content"], "rejected": json.dumps(_subtly_wrong(record, rng))}

    return BuiltinData(train=[pair(r) for r in sft.train], eval=[pair(r) for r in sft.eval], format="preference")


# name -> (builder, default train size, default eval size)
BUILTINS = {
    "person-extraction": (person_extraction, 2000, 200),
    "person-preference": (person_preference, 2000, 200),
}


def load_builtin(name: str, seed: int) -> BuiltinData:
    """Raises KeyError for an unknown name; the caller turns it into an error naming data.path."""
    builder, n_train, n_eval = BUILTINS[name]
    return builder(n_train, n_eval, seed)

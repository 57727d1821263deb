"""Titanic features: row-wise and label-free, so they are safe to compute before the folds are split.

Everything learned from data (age per title, scaling, vocabularies, ticket-group sizes) is fitted by
kit on each training fold; see the `features` section of config.yaml.
"""

import numpy as np
import pandas as pd

TITLES = {
    "Mr": "Mr", "Mrs": "Mrs", "Mme": "Mrs", "Lady": "Mrs", "Countess": "Mrs", "Dona": "Mrs",
    "Miss": "Miss", "Mlle": "Miss", "Ms": "Miss", "Master": "Master",
}


def engineer(df: pd.DataFrame) -> pd.DataFrame:
    out = pd.DataFrame(index=df.index)
    title = df["Name"].str.extract(r",\s*(?:the\s+)?([^.]+)\.", expand=False).str.strip()
    out["Title"] = title.map(TITLES).fillna("Rare")  # Rev, Dr, Col, Major, Capt, Sir, Don, Jonkheer, ...
    out["Sex"] = df["Sex"].fillna("unknown")
    out["Pclass"] = df["Pclass"].astype("Int64").astype(str)
    out["ClassSex"] = out["Pclass"] + "_" + out["Sex"]
    out["Embarked"] = df["Embarked"].fillna("S")  # the port of most passengers
    family = df["SibSp"].fillna(0) + df["Parch"].fillna(0) + 1
    out["FamilySize"] = family
    out["Alone"] = (family == 1).astype(int).astype(str)
    out["Deck"] = df["Cabin"].str[0].fillna("U").replace({"T": "A", "G": "F"})  # T and G are tiny decks
    out["CabinKnown"] = df["Cabin"].notna().astype(int).astype(str)
    out["Age"] = df["Age"]
    out["LogFarePerPerson"] = np.log1p(df["Fare"] / family)
    out["Ticket"] = df["Ticket"].fillna("none").str.strip()
    # Families travelled under one surname, usually on one ticket: surname + ticket (without its last digit,
    # which often differs between relatives' tickets) names a family; group_rates learns their fates per fold.
    surname = df["Name"].str.split(",").str[0].str.strip().fillna("")
    out["Surname"] = surname
    out["Family"] = surname + "-" + out["Ticket"].str[:-1]
    return out

import os

import pytest
from salesreport import read_sales

DATA = os.path.join(os.path.dirname(__file__), "data")


@pytest.fixture
def sample_path():
    return os.path.join(DATA, "q1.csv")


@pytest.fixture
def sales(sample_path):
    with open(sample_path, newline="") as fp:
        return read_sales(fp, sample_path)

"""The test kit: harnesses, peers' stand-ins and messages shared by the test modules."""

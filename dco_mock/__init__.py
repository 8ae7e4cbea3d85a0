"""dco_mock."""

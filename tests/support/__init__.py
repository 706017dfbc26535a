"""Helpers the tests share (servers, fakes, fixtures' building blocks); no tests here."""

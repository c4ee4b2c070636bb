"""Tests of sdcorr.demo and sdcorr demo."""

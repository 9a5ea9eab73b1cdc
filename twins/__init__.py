"""VehicleTwin (pure logic), personalisation, Ray hosting and checkpoints."""

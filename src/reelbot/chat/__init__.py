"""The product, platform-neutral: what each command means, replies, buttons, progress following,
the error-to-reply table and edit throttles; each platform implements ``Surface``."""

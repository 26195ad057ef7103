"""memory service settings: environment variables prefixed ``MEMORY_``."""

from pydantic_settings import SettingsConfigDict

from switchboard_common import ServiceSettings


class Settings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="MEMORY_", extra="ignore")

    service_name: str = "memory"
    port: int = 8004

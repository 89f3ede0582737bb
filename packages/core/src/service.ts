/** How the service names itself in health answers, logs and telemetry. */
export const SERVICE_NAME = 'Zepid Deploy v3';
export const SERVICE_VERSION = '3.0.0';

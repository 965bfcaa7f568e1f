// The JSON the crate sends: seed 004's metrics message (see crates/vitals-embed/src/snapshot.rs).

export type Health = 'healthy' | 'degraded' | 'unhealthy';
export type Severity = 'critical' | 'warning' | 'info';
export type JobStatus = 'pending' | 'running' | 'completed' | 'failed' | 'cancelled';

export interface Job {
  id: string;
  name: string;
  status: JobStatus;
  progress: number;
  start_time: string;
  end_time: string | null;
  duration_seconds: number;
  provider: string;
  vm_name: string;
}

export interface Alert {
  id: number;
  severity: Severity;
  message: string;
  timestamp: string;
}

export interface Metrics {
  timestamp: string;
  jobs_active: number;
  jobs_completed: number;
  jobs_failed: number;
  jobs_pending: number;
  queue_length: number;
  http_requests: number;
  http_errors: number;
  avg_response_time: number;
  memory_usage: number;
  cpu_usage: number;
  goroutines: number;
  tasks: number;
  active_connections: number;
  provider_stats: Record<string, number>;
  recent_jobs: Job[];
  system_health: Health;
  alerts: Alert[];
}

export interface History {
  t: number[];
  jobs_active: number[];
  jobs_completed: number[];
  jobs_failed: number[];
  memory_usage: number[];
  cpu_usage: number[];
}

package messages

// DeploymentFinished reports whether a deployment in state s is over: it
// moves no task any more and a new update may start.
func DeploymentFinished(s DeploymentState) bool {
	switch s {
	case DeploymentState_DEPLOYMENT_STATE_NONE, DeploymentState_DEPLOYMENT_STATE_DONE,
		DeploymentState_DEPLOYMENT_STATE_ROLLED_BACK, DeploymentState_DEPLOYMENT_STATE_FAILED:
		return true
	}
	return false
}

// DeploymentActive reports whether svc has a deployment in flight (paused
// counts: it holds its tasks where they are).
func DeploymentActive(svc *Service) bool {
	return svc.GetDeployment() != nil && !DeploymentFinished(svc.Deployment.State)
}

// Three alerts, each with its runbook in docs/operations.md ("Alerts"):
// - a job reached the dead-letter queue (a deployment whose job was delivered 3 times, or expired);
// - the share of failed deployments over the last hour is above a threshold;
// - the API answers 5xx.
// Notifications go to an e-mail action group when an address is given; without one the alerts
// still fire and show in the portal.

@description('Region of the log alert (metric alerts are global).')
param location string

@description('Tags for the alerts.')
param tags object

@description('Prefix of the alert names, e.g. the environment name.')
param namePrefix string

@description('Resource id of the Service Bus namespace.')
param serviceBusNamespaceId string

@description('Name of the job queue.')
param queueName string

@description('Resource id of the Application Insights component the apps send to.')
param appInsightsId string

@description('Resource id of the API container app.')
param apiAppId string

@minValue(1)
@maxValue(100)
@description('Failed deployments, as a percentage of those finished in the last hour, above which the failure-rate alert fires.')
param failureRatePercent int

@minValue(1)
@description('Finished deployments an hour must have before the failure rate counts (one failure out of two is not a trend).')
param failureRateMinimumDeployments int

@minValue(1)
@description('API responses with a 5xx status in 5 minutes above which the 5xx alert fires.')
param api5xxThreshold int

@description('E-mail address alerts are sent to; empty: no notification.')
param alertEmail string

resource actionGroup 'Microsoft.Insights/actionGroups@2023-01-01' = if (!empty(alertEmail)) {
  name: '${namePrefix}-zepid-deploy-oncall'
  location: 'global'
  tags: tags
  properties: {
    groupShortName: 'zepiddeploy'
    enabled: true
    emailReceivers: [
      {
        name: 'on-call'
        emailAddress: alertEmail
        useCommonAlertSchema: true
      }
    ]
  }
}

var actionGroupIds = empty(alertEmail) ? [] : [actionGroup.id]

// Multi-line strings are verbatim in Bicep (no interpolation), hence the placeholder.
var failureRateQuery = replace('''
customEvents
| where name in ("DeploymentCompleted", "DeploymentFailed")
| summarize Failed = countif(name == "DeploymentFailed"), Finished = count()
| where Finished >= __MINIMUM__
| extend FailureRatePercent = 100.0 * Failed / Finished
| project FailureRatePercent
''', '__MINIMUM__', string(failureRateMinimumDeployments))

resource deadLetter 'Microsoft.Insights/metricAlerts@2018-03-01' = {
  name: '${namePrefix}-deployment-queue-dead-letter'
  location: 'global'
  tags: tags
  properties: {
    description: 'A job is in the dead-letter queue of ${queueName}: its deployment was delivered 3 times without finishing, or expired. See docs/operations.md#dead-letter-queue.'
    severity: 2
    enabled: true
    scopes: [
      serviceBusNamespaceId
    ]
    evaluationFrequency: 'PT5M'
    windowSize: 'PT15M'
    criteria: {
      'odata.type': 'Microsoft.Azure.Monitor.SingleResourceMultipleMetricCriteria'
      allOf: [
        {
          criterionType: 'StaticThresholdCriterion'
          name: 'dead-lettered-messages'
          metricNamespace: 'Microsoft.ServiceBus/namespaces'
          metricName: 'DeadletteredMessages'
          dimensions: [
            {
              name: 'EntityName'
              operator: 'Include'
              values: [
                queueName
              ]
            }
          ]
          operator: 'GreaterThan'
          threshold: 0
          timeAggregation: 'Maximum'
        }
      ]
    }
    autoMitigate: true
    actions: [for id in actionGroupIds: { actionGroupId: id }]
  }
}

resource failureRate 'Microsoft.Insights/scheduledQueryRules@2022-06-15' = {
  name: '${namePrefix}-deployment-failure-rate'
  location: location
  tags: tags
  properties: {
    displayName: '${namePrefix}: deployment failure rate above ${failureRatePercent}%'
    description: 'More than ${failureRatePercent}% of the deployments finished in the last hour failed (cancelled ones do not count). See docs/operations.md#deployment-failure-rate.'
    severity: 2
    enabled: true
    scopes: [
      appInsightsId
    ]
    evaluationFrequency: 'PT15M'
    windowSize: 'PT1H'
    criteria: {
      allOf: [
        {
          query: failureRateQuery
          timeAggregation: 'Maximum'
          metricMeasureColumn: 'FailureRatePercent'
          operator: 'GreaterThan'
          threshold: failureRatePercent
          failingPeriods: {
            numberOfEvaluationPeriods: 1
            minFailingPeriodsToAlert: 1
          }
        }
      ]
    }
    autoMitigate: true
    actions: {
      actionGroups: actionGroupIds
    }
  }
}

resource api5xx 'Microsoft.Insights/metricAlerts@2018-03-01' = {
  name: '${namePrefix}-api-5xx'
  location: 'global'
  tags: tags
  properties: {
    description: 'The API answered more than ${api5xxThreshold} requests with a 5xx status in 5 minutes. See docs/operations.md#api-5xx.'
    severity: 1
    enabled: true
    scopes: [
      apiAppId
    ]
    evaluationFrequency: 'PT1M'
    windowSize: 'PT5M'
    criteria: {
      'odata.type': 'Microsoft.Azure.Monitor.SingleResourceMultipleMetricCriteria'
      allOf: [
        {
          // The platform's request count, so the alert works even when the app's telemetry does not.
          criterionType: 'StaticThresholdCriterion'
          name: 'api-5xx'
          metricNamespace: 'Microsoft.App/containerApps'
          metricName: 'Requests'
          dimensions: [
            {
              name: 'statusCodeCategory'
              operator: 'Include'
              values: [
                '5xx'
              ]
            }
          ]
          operator: 'GreaterThan'
          threshold: api5xxThreshold
          timeAggregation: 'Total'
        }
      ]
    }
    autoMitigate: true
    actions: [for id in actionGroupIds: { actionGroupId: id }]
  }
}

output actionGroupId string = empty(alertEmail) ? '' : actionGroup.id
